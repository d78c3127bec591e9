"""
The MX's authentication verdicts end to end: a server built by
L{trekmail.service.make_service} on 127.0.0.1, mail sent to its MX with
smtplib, every SPF, DKIM, ARC and DMARC lookup answered by a DNS server
the test runs; each case checks the Authentication-Results field
delivered, the folder chosen or the reply code.
"""

import base64
import os
import smtplib

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer, reactor, task, threads
from twisted.names import dns
from twisted.trial import unittest

from tests import support
from tests.delivery_support import Zone, dns_server
from tests.server_process import free_port
from trekmail.config import Config
from trekmail.mailstore import folder_path, maildir_path
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail.service import make_service
from trekmail import settings

HOSTNAME = "mail.test"
"""The server's C{[server] hostname}: our authserv-id."""

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
PRIVATE = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
PUBLIC = b"v=DKIM1; k=rsa; p=" + base64.b64encode(_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _txt(value):
    data = value.encode("ascii") if isinstance(value, str) else value
    return dns.Record_TXT(*[data[i:i + 255] for i in range(0, len(data), 255)], ttl=60)


RECORDS = {
    ("helo.test", dns.A): [dns.Record_A("127.0.0.1")],
    ("helo.test", dns.TXT): [_txt("v=spf1 a -all")],
    ("pass.test", dns.TXT): [_txt("v=spf1 ip4:127.0.0.1 -all")],
    ("fail.test", dns.TXT): [_txt("v=spf1 ip4:192.0.2.1 -all")],
    ("soft.test", dns.TXT): [_txt("v=spf1 ip4:192.0.2.1 ~all")],
    ("none.test", dns.A): [dns.Record_A("192.0.2.1")],
    ("broken.test", dns.TXT): [_txt("v=spf1 ip4:127.0.0.1 bogus:x -all")],
    ("signer.test", dns.TXT): [_txt("v=spf1 -all")],
    ("sel._domainkey.signer.test", dns.TXT): [_txt(PUBLIC)],
    ("nokey.test", dns.TXT): [_txt("v=spf1 -all")],
    ("reject.test", dns.TXT): [_txt("v=spf1 -all")],
    ("_dmarc.reject.test", dns.TXT): [_txt("v=DMARC1; p=reject")],
    ("sel._domainkey.reject.test", dns.TXT): [_txt(PUBLIC)],
    ("quarantine.test", dns.TXT): [_txt("v=spf1 -all")],
    ("_dmarc.quarantine.test", dns.TXT): [_txt("v=DMARC1; p=quarantine")],
    ("sel._domainkey.quarantine.test", dns.TXT): [_txt(PUBLIC)],
    ("monitor.test", dns.TXT): [_txt("v=spf1 -all")],
    ("_dmarc.monitor.test", dns.TXT): [_txt("v=DMARC1; p=none")],
    ("bounces.align.test", dns.TXT): [_txt("v=spf1 ip4:127.0.0.1 -all")],
    ("_dmarc.align.test", dns.TXT): [_txt("v=DMARC1; p=reject")],
    ("arc.test", dns.TXT): [_txt("v=spf1 ip4:127.0.0.1 -all")],
    ("sel._domainkey.arc.test", dns.TXT): [_txt(PUBLIC)],
}


def message(sender_header, subject="hello", extra=b""):
    return (b"From: " + sender_header.encode("ascii") + b"\r\nTo: bob@example.com\r\nSubject: " +
            subject.encode("ascii") + b"\r\nDate: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
            b"Message-ID: <" + subject.encode("ascii") + b"@test>\r\n" + extra + b"\r\nThe body.\r\n")


def signed(data, domain):
    return dkim.sign(data, b"sel", domain.encode("ascii"), PRIVATE,
                     include_headers=[b"from", b"to", b"subject"]) + data


def sealed(data):
    """C{data} as forwarded by arc.test: its verdict recorded and sealed in ARC set 1 (RFC 8617)."""
    data = b"Authentication-Results: arc.test; spf=pass smtp.mailfrom=alice@pass.test\r\n" + data
    return b"".join(dkim.arc_sign(data, b"sel", b"arc.test", PRIVATE, b"arc.test")) + data


def authentication_results(delivered_message):
    """Our Authentication-Results field, unfolded, from a delivered message (the first one: ours is on top)."""
    head = delivered_message.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    fields = [line for line in head.split(b"\r\n") if line.lower().startswith(b"authentication-results:")]
    return [f.decode("ascii") for f in fields]


class _MX(unittest.TestCase):
    """A server whose MX checks mail against the test's DNS; C{extra} is INI text for its configuration."""

    extra = ""

    def setUp(self):
        self.zone = Zone(RECORDS)
        dns_port = dns_server(self, self.zone)
        self.port = free_port()
        path = support.write_config(self.mktemp(), "[dns]\nnameservers = 127.0.0.1:%d\n" % dns_port + self.extra,
                                    mx="tcp:%d:interface=127.0.0.1" % self.port)
        self.config = Config.from_file(path)
        db = database.connect(self.config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        admin = Administration(db, settings.realm(self.config), task.Clock())
        admin.clock.advance(reactor.seconds())
        account = admin.account_add("owner@example.net", "starter", verified=True)
        admin.domain_add("example.com", account.id)
        admin.mailbox_add("bob@example.com", "bob's password")
        db.close()
        self.server = make_service(self.config, reactor)
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)

    def _send(self, sender, data, helo):
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname=helo, timeout=30) as client:
            try:
                client.sendmail(sender, ["bob@example.com"], data)
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error.decode("ascii")
        return 250, ""

    def folder(self, name):
        root = maildir_path(self.config.data_dir, "bob@example.com")
        new = os.path.join(folder_path(root, name), "new")
        if not os.path.isdir(new):
            return []
        return [open(os.path.join(new, f), "rb").read() for f in sorted(os.listdir(new))]

    @defer.inlineCallbacks
    def send(self, sender, data, helo="helo.test", folder="INBOX"):
        """Send C{data}, wait for its delivery into C{folder}; returns its Authentication-Results fields."""
        code, _ = yield threads.deferToThread(self._send, sender, data, helo)
        self.assertEqual(code, 250)
        yield support.wait_until(lambda: self.folder(folder))
        [copy] = self.folder(folder)
        return authentication_results(copy)

    def refused(self, sender, data, helo="helo.test"):
        return threads.deferToThread(self._send, sender, data, helo)


class InboundAuthenticationTests(_MX):
    @defer.inlineCallbacks
    def test_spf_pass_with_helo_pass(self):
        [field] = yield self.send("alice@pass.test", message("alice@pass.test"))
        self.assertTrue(field.startswith("Authentication-Results: mail.test;"), field)
        self.assertIn("spf=pass smtp.mailfrom=alice@pass.test", field)
        self.assertIn("spf=pass smtp.helo=helo.test", field)
        self.assertIn("dkim=none", field)
        self.assertIn("dmarc=none", field)

    @defer.inlineCallbacks
    def test_spf_fail(self):
        [field] = yield self.send("alice@fail.test", message("alice@fail.test"))
        self.assertIn("spf=fail smtp.mailfrom=alice@fail.test", field)

    @defer.inlineCallbacks
    def test_spf_softfail(self):
        [field] = yield self.send("alice@soft.test", message("alice@soft.test"))
        self.assertIn("spf=softfail smtp.mailfrom=alice@soft.test", field)

    @defer.inlineCallbacks
    def test_spf_none(self):
        [field] = yield self.send("alice@none.test", message("alice@none.test"), helo="unknown-helo.test")
        self.assertIn("spf=none smtp.mailfrom=alice@none.test", field)
        self.assertIn("spf=none smtp.helo=unknown-helo.test", field)

    @defer.inlineCallbacks
    def test_spf_permerror(self):
        [field] = yield self.send("alice@broken.test", message("alice@broken.test"))
        self.assertIn("spf=permerror smtp.mailfrom=alice@broken.test", field)

    @defer.inlineCallbacks
    def test_null_sender_checked_as_helo(self):
        [field] = yield self.send("", message("mailer-daemon@helo.test"))
        self.assertIn("spf=pass smtp.mailfrom=postmaster@helo.test", field)

    @defer.inlineCallbacks
    def test_dkim_valid(self):
        [field] = yield self.send("alice@pass.test", signed(message("alice@signer.test"), "signer.test"))
        self.assertRegex(field, r"dkim=pass header\.d=signer\.test header\.s=sel header\.b=\S{8}")

    @defer.inlineCallbacks
    def test_dkim_broken_body(self):
        data = signed(message("alice@signer.test"), "signer.test").replace(b"The body.", b"The forged body.")
        [field] = yield self.send("alice@pass.test", data)
        self.assertIn("dkim=fail header.d=signer.test", field)

    @defer.inlineCallbacks
    def test_dkim_missing_key(self):
        [field] = yield self.send("alice@pass.test", signed(message("alice@nokey.test"), "nokey.test"))
        self.assertIn("dkim=permerror header.d=nokey.test", field)

    @defer.inlineCallbacks
    def test_forged_results_of_our_authserv_id_removed(self):
        forged = (b"Authentication-Results: mail.test; spf=pass smtp.mailfrom=ceo@example.com;\r\n"
                  b"\tdkim=pass header.d=example.com\r\n"
                  b"Authentication-Results: (comment) MAIL.TEST; dmarc=pass\r\n"
                  b"Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n")
        fields = yield self.send("alice@fail.test", message("alice@fail.test", extra=forged))
        self.assertEqual(len(fields), 2, fields)
        self.assertIn("spf=fail smtp.mailfrom=alice@fail.test", fields[0])
        self.assertEqual(fields[1], "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example")

    @defer.inlineCallbacks
    def test_valid_arc_chain(self):
        ours, forwarders = yield self.send("alice@arc.test", sealed(message("alice@pass.test")))
        self.assertTrue(ours.startswith("Authentication-Results: mail.test;"), ours)
        self.assertIn("arc=pass", ours)
        self.assertTrue(forwarders.startswith("Authentication-Results: arc.test;"), forwarders)

    @defer.inlineCallbacks
    def test_arc_chain_broken_after_sealing(self):
        data = sealed(message("alice@pass.test")).replace(b"The body.", b"Another body.")
        ours, _ = yield self.send("alice@arc.test", data)
        self.assertIn("arc=fail", ours)

    @defer.inlineCallbacks
    def test_dmarc_reject_unaligned_refused_at_end_of_data(self):
        code, text = yield self.refused("alice@pass.test", message("ceo@reject.test"))
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith("5.7.1 "), text)
        self.assertIn("reject.test", text)
        self.assertEqual(self.folder("INBOX") + self.folder("Junk"), [])

    @defer.inlineCallbacks
    def test_dmarc_reject_aligned_by_dkim_delivered(self):
        [field] = yield self.send("alice@pass.test", signed(message("ceo@reject.test"), "reject.test"))
        self.assertIn("dmarc=pass (p=reject) header.from=reject.test", field)

    @defer.inlineCallbacks
    def test_dmarc_reject_with_broken_signature_refused(self):
        data = signed(message("ceo@reject.test"), "reject.test").replace(b"The body.", b"Pay this invoice.")
        code, _ = yield self.refused("alice@pass.test", data)
        self.assertEqual(code, 550)

    @defer.inlineCallbacks
    def test_dmarc_aligned_by_spf_of_the_organizational_domain(self):
        [field] = yield self.send("bounce@bounces.align.test", message("news@align.test"))
        self.assertIn("spf=pass smtp.mailfrom=bounce@bounces.align.test", field)
        self.assertIn("dmarc=pass (p=reject) header.from=align.test", field)

    @defer.inlineCallbacks
    def test_dmarc_quarantine_unaligned_goes_to_junk(self):
        [field] = yield self.send("alice@pass.test", message("billing@quarantine.test"), folder="Junk")
        self.assertIn("dmarc=fail (p=quarantine) header.from=quarantine.test", field)
        self.assertEqual(self.folder("INBOX"), [])

    @defer.inlineCallbacks
    def test_dmarc_quarantine_aligned_stays_in_inbox(self):
        data = signed(message("billing@quarantine.test"), "quarantine.test")
        [field] = yield self.send("billing@quarantine.test", data)
        self.assertIn("spf=fail smtp.mailfrom=billing@quarantine.test", field)
        self.assertIn("dmarc=pass (p=quarantine) header.from=quarantine.test", field)
        self.assertEqual(self.folder("Junk"), [])

    @defer.inlineCallbacks
    def test_dmarc_none_unaligned_delivered_with_its_verdict(self):
        [field] = yield self.send("alice@pass.test", message("ceo@monitor.test"))
        self.assertIn("dmarc=fail (p=none) header.from=monitor.test", field)
        self.assertEqual(self.folder("Junk"), [])

    @defer.inlineCallbacks
    def test_dmarc_none_aligned(self):
        [field] = yield self.send("alice@pass.test", message("alice@pass.test"))
        self.assertIn("dmarc=none header.from=pass.test", field)


class DMARCRejectOffTests(_MX):
    """C{[mx] dmarc_reject = no}: a C{p=reject} failure is filed in Junk instead."""

    extra = "[mx]\ndmarc_reject = no\n"

    @defer.inlineCallbacks
    def test_dmarc_reject_unaligned_refused_at_end_of_data(self):
        [field] = yield self.send("alice@pass.test", message("ceo@reject.test"), folder="Junk")
        self.assertIn("dmarc=fail (p=reject) header.from=reject.test", field)

    @defer.inlineCallbacks
    def test_dmarc_reject_with_broken_signature_refused(self):
        data = signed(message("ceo@reject.test"), "reject.test").replace(b"The body.", b"Pay this invoice.")
        [field] = yield self.send("alice@pass.test", data, folder="Junk")
        self.assertIn("dkim=fail header.d=reject.test", field)
