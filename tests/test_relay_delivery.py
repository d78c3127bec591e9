"""
End to end over loopback sockets: submission (smtplib over implicit TLS)
-> durable queue -> managed relay -> an ESMTP sink, with MX records from a
DNS server started by the test, DKIM verified by dkimpy against the key
published in that DNS, opportunistic STARTTLS, MX fallback, source pools,
NXDOMAIN bounces and SERVFAIL deferrals.
"""

import os
import smtplib

import dkim
from twisted.internet import defer, reactor, ssl, task, threads
from twisted.names import client as dns_client
from twisted.names import dns
from twisted.trial import unittest

from tests import support
from tests.delivery_support import Sink, Zone, dns_server
from tests.smtp_site import LATER, PASSWORD, client_context
from trekmail import settings
from trekmail.mailstore import maildir_path
from trekmail.policy.logins import LoginGuard
from trekmail.policy.throttle import AuthThrottle
from trekmail.queue.interface import Envelope
from trekmail.queue.retry import RetryPolicy
from trekmail.realm.dkimkeys import txt_value
from trekmail.service import Components, build_queue, served_factory, submission_factories


def _txt(value):
    data = value.encode("ascii")
    return dns.Record_TXT(*[data[i:i + 255] for i in range(0, len(data), 255)], ttl=60)


class RelayTests(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        sink_port = self.sink.listen(self)
        self.records = {
            ("remote.test", dns.MX): [dns.Record_MX(10, b"mx.remote.test")],
            ("mx.remote.test", dns.A): [dns.Record_A("127.0.0.1")],
            ("backup.test", dns.MX): [dns.Record_MX(20, b"mx.remote.test"), dns.Record_MX(10, b"dead.backup.test")],
            ("dead.backup.test", dns.A): [dns.Record_A("127.0.0.9")],
            ("plain.test", dns.A): [dns.Record_A("127.0.0.1")],
        }
        self.zone = Zone(self.records, servfail=("broken.test",))
        dns_port = dns_server(self, self.zone)
        # The relay runs on the real reactor, so the domain is added at the real time: added at the tests' fixed
        # noon, it was younger than eight days (the "new" pool) only until 2026-11-29.
        self.config, self.admin, _ = support.realm(self, now=reactor.seconds(), extra=(
            "[relay]\nmx_port = %d\nsource_pools = warm: 127.0.0.2; new: 127.0.0.3\n"
            "[dns]\nnameservers = 127.0.0.1:%d\n"
            "[queue]\nretry_intervals = 60\n" % (sink_port, dns_port)
        ))
        account = self.admin.account_add("owner@example.net", "starter", verified=True)
        domain = self.admin.domain_add("example.com", account.id)
        self.admin.mailbox_add("alice@example.com", PASSWORD)
        self.records[("dkim._domainkey.example.com", dns.TXT)] = [_txt(txt_value(domain.dkim_public_key))]
        self.zone.records = dict(self.records)
        self.resolver = dns_client.Resolver(servers=[("127.0.0.1", dns_port)], reactor=reactor)
        self.sink.tls = settings.tls_options(self.config)

        clock = task.Clock()
        clock.advance(LATER)
        self.components = Components(self.config, reactor, clock=clock,
                                     logins=LoginGuard(clock, AuthThrottle(free=1000)))
        self.database = self.components.database
        self.database.start()
        self.addCleanup(self.database.stop)
        self.components.hashing.start()
        self.addCleanup(self.components.hashing.stop)
        self.directory = self.components.directory
        self.service = build_queue(self.config, reactor, self.database, self.directory)
        self.queue = self.service.queue
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def submission(self):
        """The implicit-TLS submission listener, as the wiring builds it, handing to the real queue."""
        factory = submission_factories(self.components, self.queue)["submissions"]
        served = served_factory(self.components, "submissions", factory, implicit_tls=True)
        port = reactor.listenTCP(0, served, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_queue_takes_the_configured_retry_policy(self):
        yield self.wait_until(lambda: self.queue.started)
        self.assertEqual(self.queue._policy, RetryPolicy((60,), 5 * 86400))

    @defer.inlineCallbacks
    def submit(self, port, message, helo=None):
        """alice sends C{message} to bob@remote.test over implicit TLS, once the queue runs."""
        def send():
            c = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname=helo, context=client_context(), timeout=30)
            c.login("alice@example.com", PASSWORD)
            c.sendmail("alice@example.com", ["bob@remote.test"], message)
            c.quit()

        yield self.wait_until(lambda: self.queue.started)
        yield threads.deferToThread(send)

    @defer.inlineCallbacks
    def wait_until(self, condition, timeout=20):
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError("timed out")
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def test_submission_adds_trace_date_and_message_id(self):
        port = self.submission()
        message = b"From: alice@example.com\r\nTo: bob@remote.test\r\nSubject: bare\r\n\r\nHello\r\n"

        yield self.submit(port, message, helo="client.example")
        [(sender, recipient, data)] = yield self.sink.wait_for(1)
        answers, _, _ = yield self.resolver.lookupText("dkim._domainkey.example.com")
        published = b"".join(answers[0].payload.data)
        self.assertTrue(dkim.verify(data, dnsfunc=lambda name, timeout=5: published))
        head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
        lines = head.split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"DKIM-Signature: "))
        self.assertRegex(lines[1], rb"^Received: from client\.example \(\[127\.0\.0\.1\]\) by \S+ \(TrekMail\)"
                                   rb" with ESMTPSA id [0-9a-f]+ for <bob@remote\.test>; \w{3}, .* \+0000$")
        self.assertRegex(lines[2], rb"^Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$")
        self.assertRegex(lines[3], rb"^Message-ID: <[0-9a-f]{32}@\S+>$")
        self.assertIn(b"h=from : from : subject : subject : date : date : to : to : message-id : message-id;",
                      lines[0])

    @defer.inlineCallbacks
    def test_submission_to_sink_with_dkim(self):
        port = self.submission()
        message = (
            b"From: alice@example.com\r\nTo: bob@remote.test\r\nSubject: signed\r\n"
            b"Date: Sat, 21 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n"
            b"Hello,\r\n.\r\n..two dots\r\nbye\r\n"
        )

        yield self.submit(port, message)
        [(sender, recipient, data)] = yield self.sink.wait_for(1)
        self.assertEqual(recipient, "bob@remote.test")
        path = self.service.return_paths.parse(sender)
        self.assertTrue(self.service.return_paths.verify(path, "alice@example.com", "bob@remote.test"))
        self.assertIn(b"\r\nFrom: alice@example.com\r\n", data)
        self.assertTrue(data.startswith(b"DKIM-Signature: "))
        self.assertTrue(data.endswith(b"\r\n\r\nHello,\r\n.\r\n..two dots\r\nbye\r\n"))
        answers, _, _ = yield self.resolver.lookupText("dkim._domainkey.example.com")
        published = b"".join(answers[0].payload.data)
        self.assertTrue(dkim.verify(data, dnsfunc=lambda name, timeout=5: published))
        self.assertFalse(dkim.verify(data.replace(b"bye", b"BYE"), dnsfunc=lambda name, timeout=5: published))
        header = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
        self.assertIn(b"c=relaxed/relaxed", header)
        self.assertIn(b"a=rsa-sha256", header)
        self.assertIn(b"h=from : from : subject : subject : date : date : to : to : message-id : message-id;", header)
        self.assertEqual(self.sink.tls_used, [True])
        self.assertEqual(self.sink.peers, ["127.0.0.3"])

    @defer.inlineCallbacks
    def test_lone_dots_at_chunk_boundaries(self):
        """
        twisted.mail's own client stuffs each 16 KiB chunk separately; a
        lone dot near a boundary must neither end the message early nor
        get lost.  One message per offset, each must arrive whole, once.
        """
        yield self.wait_until(lambda: self.queue.started)
        messages = []
        head = b"From: someone@elsewhere.test\r\nSubject: dots\r\n\r\n"
        for delta in range(-6, 7):
            body = bytearray(head)
            for k in (1, 2, 3):
                target = 16384 * k + delta
                filler = target - len(body) - 2
                body += b"x" * (filler % 70 or 1)
                while len(body) < target - 2:
                    body += b"\r\n" + b"y" * min(70, max(0, target - len(body) - 4))
                body += b"\r\n.\r\n"
            body += b"end\r\n"
            messages.append(bytes(body))
        yield defer.gatherResults([
            self.queue.enqueue(Envelope("someone@elsewhere.test", ("bob@remote.test",), "submission"), data)
            for data in messages
        ])
        received = yield self.sink.wait_for(len(messages))
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(self.sink.received), len(messages))
        self.assertEqual(sorted(r[2] for r in received), sorted(messages))
        yield self.wait_until(lambda: not self.queue.entries())
        self.assertLessEqual(self.sink.connections, 1 + self.service.relay.connections_per_destination)

    @defer.inlineCallbacks
    def test_mx_preference_and_fallback(self):
        yield self.wait_until(lambda: self.queue.started)
        yield self.queue.enqueue(Envelope("someone@elsewhere.test", ("x@backup.test", "y@plain.test"), "submission"),
                                 b"Subject: fallback\r\n\r\nhi\r\n")
        received = yield self.sink.wait_for(2)
        yield self.wait_until(lambda: not self.queue.entries())
        self.assertEqual(sorted(r[1] for r in received), ["x@backup.test", "y@plain.test"])
        self.assertEqual(self.sink.peers, ["127.0.0.2", "127.0.0.2"])

    @defer.inlineCallbacks
    def test_failed_starttls_falls_back_to_plain(self):
        """A sink offering STARTTLS without a certificate: the handshake fails, the retry is plain."""
        self.sink.tls = ssl.CertificateOptions()
        yield self.wait_until(lambda: self.queue.started)
        yield self.queue.enqueue(Envelope("someone@elsewhere.test", ("bob@remote.test",), "submission"),
                                 b"Subject: plain\r\n\r\nhi\r\n")
        yield self.sink.wait_for(1)
        yield self.wait_until(lambda: not self.queue.entries())
        self.assertEqual(self.sink.tls_used, [False])
        self.assertEqual(self.sink.connections, 2)

    @defer.inlineCallbacks
    def test_nxdomain_bounces_and_servfail_defers(self):
        yield self.wait_until(lambda: self.queue.started)
        yield self.queue.enqueue(
            Envelope("alice@example.com", ("x@nowhere.test", "y@broken.test"), "submission"),
            b"From: alice@example.com\r\nSubject: lost\r\n\r\nhi\r\n",
        )
        new = os.path.join(maildir_path(self.config.data_dir, "alice@example.com"), "new")
        yield self.wait_until(lambda: os.path.isdir(new) and os.listdir(new))
        [name] = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            report = f.read()
        self.assertIn(b"Final-Recipient: rfc822; x@nowhere.test", report)
        self.assertIn(b"Status: 5.1.2", report)
        self.assertNotIn(b"y@broken.test", report.split(b"text/rfc822-headers")[0])
        [entry] = self.queue.entries()
        self.assertEqual(entry["pending"], ["y@broken.test"])
        self.assertIn("4.4.3", entry["errors"]["y@broken.test"])
        self.assertEqual(self.sink.received, [])
        self.flushLoggedErrors(RuntimeError)

    @defer.inlineCallbacks
    def test_rcpt_refusal_is_recorded_as_hard_bounce(self):
        yield self.wait_until(lambda: self.queue.started)
        self.sink.refuse["gone@remote.test"] = 550
        for _ in range(3):
            yield self.queue.enqueue(
                Envelope("alice@example.com", ("gone@remote.test",), "submission"),
                b"From: alice@example.com\r\nSubject: x\r\n\r\nhi\r\n",
            )
        yield self.wait_until(lambda: self.service.suppressions.is_suppressed("example.com", "gone@remote.test"))
        connections = self.sink.connections
        yield self.queue.enqueue(
            Envelope("alice@example.com", ("gone@remote.test",), "submission"),
            b"From: alice@example.com\r\nSubject: x\r\n\r\nhi\r\n",
        )
        new = os.path.join(maildir_path(self.config.data_dir, "alice@example.com"), "new")
        yield self.wait_until(lambda: os.path.isdir(new) and len(os.listdir(new)) == 4)
        self.assertEqual(self.sink.connections, connections)
