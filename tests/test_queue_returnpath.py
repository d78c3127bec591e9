"""
Signed return paths (trekmail/queue/returnpath.py): what the managed relay
sends as MAIL FROM, what the MX accepts for the reports that come back,
and which diagnostics a report calls a remote server's (RFC 3464 section
2.3.6).
"""

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from tests.test_relay_client import collect, feed, session
from tests.test_relay_mx import Connection, capture_connections
from trekmail.crypto import SecretKeyring
from trekmail.queue import dsn
from trekmail.queue.interface import Envelope
from trekmail.queue.returnpath import KEY_INFO, MAX_AGE_DAYS, ReturnPaths
from trekmail.relay import client
from trekmail.relay.managed import ManagedRelay
from trekmail.smtp.mx import MXFactory

NOW = 1795262400.0
QUEUE_ID = "19a2b3c4d5e6f708192a3b"


def paths(key=b"k" * 32, hostname="Mail.Test"):
    clock = Clock()
    clock.advance(NOW)
    return ReturnPaths(lambda: [key], hostname, clock), clock


class ReturnPathTests(unittest.TestCase):
    def test_address_is_short_lower_case_and_on_our_hostname(self):
        rp, _ = paths()
        address = rp.address(QUEUE_ID.upper(), "Alice@Example.com", "Bob@Remote.test")
        local, _, domain = address.partition("@")
        self.assertEqual(domain, "mail.test")
        self.assertTrue(local.startswith("bounce+%s-%d-" % (QUEUE_ID, NOW // 86400)))
        self.assertLessEqual(len(local), 64)
        self.assertEqual(address, address.lower())
        self.assertEqual(address, rp.address(QUEUE_ID, "alice@example.com", "bob@remote.test"))

    def test_verifies_only_for_its_sender_and_recipient(self):
        rp, _ = paths()
        path = rp.parse(rp.address(QUEUE_ID, "alice@example.com", "bob@remote.test").upper())
        self.assertEqual(path.queue_id, QUEUE_ID)
        self.assertTrue(rp.verify(path, "ALICE@example.com", "bob@REMOTE.test"))
        self.assertFalse(rp.verify(path, "alice@example.com", "carol@remote.test"))
        self.assertFalse(rp.verify(path, "mallory@example.com", "bob@remote.test"))
        other, _ = paths(key=b"x" * 32)
        self.assertFalse(other.verify(path, "alice@example.com", "bob@remote.test"))

    def test_other_hosts_shapes_and_old_days_are_not_ours(self):
        rp, clock = paths()
        address = rp.address(QUEUE_ID, "alice@example.com", "bob@remote.test")
        local = address.partition("@")[0]
        for other in (local + "@example.com", "bounce+x@mail.test", local + "x@mail.test",
                      "bob@mail.test", local.replace("-", "=", 1) + "@mail.test"):
            self.assertIsNone(rp.parse(other), other)
        clock.advance(MAX_AGE_DAYS * 86400)
        self.assertIsNotNone(rp.parse(address))
        clock.advance(86400)
        self.assertIsNone(rp.parse(address))

    def test_key_is_derived_from_the_secrets_key_and_survives_rotation(self):
        keyring = SecretKeyring.load(os.path.join(os.path.abspath(self.mktemp()) + ".key"))
        clock = Clock()
        rp = ReturnPaths(lambda: keyring.derive(KEY_INFO), "mail.test", clock)
        self.assertNotIn(keyring.derive(KEY_INFO)[0], [key for _, key in keyring._keys])
        path = rp.parse(rp.address(QUEUE_ID, "a@example.com", "b@remote.test"))
        keyring.begin_rotation()
        self.assertTrue(rp.verify(path, "a@example.com", "b@remote.test"))
        keyring.finish_rotation()
        self.assertFalse(rp.verify(path, "a@example.com", "b@remote.test"))


class ManagedReturnPathTests(unittest.TestCase):
    def setUp(self):
        self.connections = capture_connections(self)
        self.paths, _ = paths()
        self.relay = ManagedRelay(
            reactor=Clock(),
            resolver=None,
            hostname="mail.test",
            connections_per_destination=1,
            return_paths=self.paths,
        )

    def jobs(self):
        [(take, ended)] = self.connections
        taken = []
        while True:
            job = take()
            if job is None:
                ended.callback(Connection(transactions=len(taken), ran_out=True))
                return taken
            taken.append(job)
            job.finish(client.outcomes(job.recipients, 250, "2.0.0 ok"))

    def test_each_recipient_leaves_from_its_signed_return_path(self):
        self.relay.deliver("a@example.com", ["x@[127.0.0.1]", "y@[127.0.0.1]"], b"x\r\n", queue_id=QUEUE_ID)
        jobs = self.jobs()
        self.assertEqual([(j.sender, j.recipients) for j in jobs], [
            (self.paths.address(QUEUE_ID, "a@example.com", r), (r,)) for r in ("x@[127.0.0.1]", "y@[127.0.0.1]")
        ])

    def test_a_report_keeps_the_null_sender(self):
        self.relay.deliver("", ["x@[127.0.0.1]", "y@[127.0.0.1]"], b"x\r\n", queue_id=QUEUE_ID)
        [job] = self.jobs()
        self.assertEqual((job.sender, job.recipients), ("", ("x@[127.0.0.1]", "y@[127.0.0.1]")))


class MXAcceptanceTests(unittest.TestCase):
    def rcpt(self, address):
        rp, _ = paths()
        self.address = rp.address(QUEUE_ID, "a@example.com", "b@remote.test")
        factory = MXFactory(
            directory=FakeDirectory(["example.com"], []),
            queue=FakeQueue(),
            clock=Clock(),
            hostname="mail.test",
            tls_options=object(),
            return_paths=rp,
        )
        server = factory.buildProtocol(None)
        transport = TLSStringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"EHLO remote.test\r\nMAIL FROM:<>\r\n")
        replies(transport)
        server.dataReceived(b"RCPT TO:<" + (address or self.address).encode() + b">\r\n")
        return replies(transport)[-1]

    def test_our_return_path_is_accepted(self):
        self.assertTrue(self.rcpt(None).startswith("250"))

    def test_other_addresses_at_our_hostname_are_refused(self):
        self.assertTrue(self.rcpt("bounce+nothing@mail.test").startswith("550 5.7.1"))


class DiagnosticTests(unittest.TestCase):
    def report(self, outcome):
        envelope = Envelope("a@example.com", (outcome.recipient,), "submission", received_at=NOW)
        data = dsn.build_report("mail.test", QUEUE_ID, envelope, [outcome], NOW, b"Subject: x\r\n\r\nbody\r\n")
        return [line for line in data.split(b"\r\n") if line.startswith(b"Diagnostic-Code:")]

    def test_our_own_findings_are_not_smtp_replies(self):
        for text in ("5.1.2 no such domain: remote.test", "5.1.1 x@remote.test is suppressed",
                     "4.4.1 no MX host answered"):
            code = int(text[0]) * 100 + 50
            self.assertEqual(self.report(client.Outcome("x@remote.test", code, text)),
                             [b"Diagnostic-Code: X-TrekMail; " + text.encode()])

    def test_a_remote_reply_is_an_smtp_diagnostic(self):
        outcome = client.Outcome("x@remote.test", 550, "5.1.1 user unknown", "mx.remote.test", reply=True)
        self.assertEqual(self.report(outcome), [b"Diagnostic-Code: smtp; 550 5.1.1 user unknown"])

    def test_the_client_marks_server_replies_and_the_relay_its_findings(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        results = collect(job)
        p, t = session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        feed(p, t, b"553 5.7.1 sender refused")
        self.assertEqual([(o.code, o.reply) for o in results], [(553, True)])
        lost = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        results = collect(lost)
        p, t = session([lost])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        p.connectionLost(None)
        self.assertEqual([(o.code, o.reply) for o in results], [(451, False)])
