"""
A DKIM key rotation end to end (docs/dkim.md), on the server
L{trekmail.service.make_service} builds, with real sockets on 127.0.0.1:
messages submitted on 587 before, during and after the rotation leave
through the managed relay for a sink found through a DNS server the test
runs, and every signature of every message verifies under dkimpy and
under OpenDKIM's C{opendkim-testmsg}, both given the key by that DNS
server.  The rotation is started with the C{trekmail} CLI, the new keys
(RSA and Ed25519) are published mid-test, the server's own schedule
switches signing to them, and retires the old key once its overlap is
over.
"""

import io
import json
import os
import smtplib
import sqlite3

import dkim
from twisted.internet import defer, reactor, task, threads
from twisted.names import dns
from twisted.trial import unittest

from tests import opendkim, support
from tests.delivery_support import Sink, dns_server, remote_test_zone, txt_record
from tests.server_process import free_port
from trekmail import cli, settings
from trekmail.config import Config
from trekmail.queue import delivery
from trekmail.realm import database, dkimkeys, schema
from trekmail.realm.admin import Administration
from trekmail.service import make_service

PASSWORD = "rotation test password"
DAY = 86400


def header_fields(message):
    """The header's fields, each with its continuation lines, and the rest of the message."""
    head, _, body = message.partition(b"\r\n\r\n")
    fields = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def one_signature_each(message):
    """
    One copy of C{message} per DKIM-Signature, with only that one: a
    signature never covers another DKIM-Signature field, and each
    verifier then reports on exactly the signature it is given.
    """
    fields, body = header_fields(message)
    signatures = [f for f in fields if f.lower().startswith(b"dkim-signature:")]
    copies = []
    for keep in signatures:
        kept = [f for f in fields if f is keep or f not in signatures]
        copies.append((keep, b"\r\n".join(kept) + b"\r\n\r\n" + body))
    return copies


def tag(signature, name):
    unfolded = b"".join(signature.split(b"\r\n")).replace(b" ", b"").replace(b"\t", b"")
    for part in unfolded.partition(b":")[2].split(b";"):
        key, _, value = part.partition(b"=")
        if key == name:
            return value.decode("ascii")
    return None


class RotationEndToEndTests(unittest.TestCase):
    def setUp(self):
        self.patch(delivery, "DOMAIN_CACHE_SECONDS", 0.2)
        self.sink = Sink()
        sink_port = self.sink.listen(self)
        self.zone = remote_test_zone()
        dns_port = dns_server(self, self.zone)
        self.resolv_conf = opendkim.serve_on_port_53(self, self.zone)
        self.submission = free_port()
        self.config_path = support.write_config(self.mktemp(), (
            "[relay]\nmx_port = %d\n[dns]\nnameservers = 127.0.0.1:%d\n"
            "[dkim]\ncheck_interval = 1\noverlap_days = 7\ned25519 = yes\n" % (sink_port, dns_port)
        ), submission="tcp:%d:interface=127.0.0.1" % (self.submission,))
        config = Config.from_file(self.config_path)
        self.database_path = config.database_path
        self.data_dir = config.data_dir
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        admin = Administration(db, settings.realm(config), task.Clock())
        admin.clock.advance(reactor.seconds())
        account = admin.account_add("owner@example.net", "starter", verified=True)
        admin.domain_add("example.com", account.id)
        admin.mailbox_add("alice@example.com", PASSWORD)
        db.close()
        self.publish()
        self.server = make_service(config, reactor)
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)

    def cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--config", self.config_path, "--json"] + list(argv), stdout=out, stderr=err)
        self.assertEqual(code, 0, err.getvalue())
        return json.loads(out.getvalue())

    def publish(self):
        """Serve the DKIM records C{domain dns} lists now, and only those."""
        for key in [k for k in self.zone.records if "._domainkey." in k[0]]:
            del self.zone.records[key]
        for record in self.cli("domain", "dns", "example.com"):
            if "._domainkey." in record["name"]:
                self.zone.records[(record["name"], dns.TXT)] = [txt_record(record["value"])]

    def states(self):
        return {s["selector"]: s["state"] for s in self.cli("domain", "dkim", "status", "example.com")}

    def submit(self, number):
        message = (
            "From: alice@example.com\r\nTo: carol@remote.test\r\nSubject: rotation %d\r\n"
            "Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <rotation-%d@example.com>\r\n\r\n"
            "Message %d of the rotation.\r\n" % (number, number, number)
        ).encode("ascii")
        with smtplib.SMTP("127.0.0.1", self.submission, timeout=30) as client:
            client.starttls(context=support.client_context())
            client.login("alice@example.com", PASSWORD)
            client.sendmail("alice@example.com", ["carol@remote.test"], message)

    def dnsfunc(self, name, timeout=5):
        answers = self.zone.records.get((name.decode("ascii").rstrip(".").lower(), dns.TXT), [])
        return b"".join(answers[0].data) if answers else None

    @defer.inlineCallbacks
    def send_and_verify(self, number):
        """Submit message C{number}; the selectors that signed it, each signature verified by both verifiers."""
        yield threads.deferToThread(self.submit, number)
        received = yield self.sink.wait_for(number)
        data = received[number - 1][2]
        selectors = []
        for signature, alone in one_signature_each(data):
            selector = tag(signature, b"s")
            self.assertTrue(dkim.verify(alone, dnsfunc=self.dnsfunc), (number, selector))
            ok, why = yield threads.deferToThread(opendkim.verify, alone, self.resolv_conf)
            self.assertTrue(ok, (number, selector, why))
            forged = alone.replace(b"Message %d" % number, b"Forged %d" % number)
            self.assertFalse(dkim.verify(forged, dnsfunc=self.dnsfunc))
            ok, why = yield threads.deferToThread(opendkim.verify, forged, self.resolv_conf)
            self.assertFalse(ok, (number, selector, "opendkim-testmsg accepted a forged body"))
            selectors.append((selector, tag(signature, b"a")))
        return selectors

    def wait_for_state(self, selector, state):
        def reached():
            db = sqlite3.connect(self.database_path)
            try:
                return db.execute("SELECT 1 FROM dkim_selectors WHERE selector = ? AND state = ?",
                                  (selector, state)).fetchone() is not None
            finally:
                db.close()
        return support.wait_until(reached, timeout=20)

    @defer.inlineCallbacks
    def test_rotation_with_every_message_verifying(self):
        signed = yield self.send_and_verify(1)
        self.assertEqual(signed, [("dkim", "rsa-sha256")])

        rotated = self.cli("domain", "dkim", "rotate", "example.com")
        pending = {s["algorithm"]: s["selector"] for s in rotated if s["state"] == "pending"}
        self.assertEqual(set(pending), {"rsa", "ed25519"})
        names = {r["name"] for r in self.cli("domain", "dns", "example.com") if "._domainkey." in r["name"]}
        self.assertEqual(names, {"%s._domainkey.example.com" % s for s in ["dkim"] + list(pending.values())})
        signed = yield self.send_and_verify(2)
        self.assertEqual(signed, [("dkim", "rsa-sha256")], "not published yet: signing stays on the old key")

        self.publish()
        yield self.wait_for_state(pending["rsa"], "active")
        yield self.wait_for_state(pending["ed25519"], "active")
        self.assertEqual(self.states()["dkim"], "retiring")
        yield task.deferLater(reactor, 0.3, lambda: None)
        signed = yield self.send_and_verify(3)
        self.assertEqual(signed, [(pending["rsa"], "rsa-sha256"), (pending["ed25519"], "ed25519-sha256")])

        db = sqlite3.connect(self.database_path)
        db.execute("UPDATE dkim_selectors SET retiring_at = retiring_at - ? WHERE selector = 'dkim'", (7 * DAY,))
        db.commit()
        db.close()
        yield self.wait_for_state("dkim", "retired")
        self.assertFalse(os.path.exists(dkimkeys.key_path(self.data_dir, "example.com", "dkim")))
        self.publish()
        self.assertIsNone(self.dnsfunc(b"dkim._domainkey.example.com"), "domain dns no longer lists it")
        signed = yield self.send_and_verify(4)
        self.assertEqual(signed, [(pending["rsa"], "rsa-sha256"), (pending["ed25519"], "ed25519-sha256")])
