"""
The queue under a task.Clock: delivery, retries with backoff, expiry,
RFC 3464 reports, local Maildir delivery, suppression after repeated hard
bounces, recovery after a restart, and the operator's delete and flush.
"""

import email
import email.policy
import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.delivery_support import FakeDatabase, SyncPool, SyncReactor, delivered
from tests.fakes import FakeDirectory
from trekmail.config import Config, ConfigError
from trekmail.mailstore import maildir_path
from trekmail.delivery import Outcome
from trekmail.queue import admin as queue_admin
from trekmail.queue.delivery import Deliverer, Router
from trekmail.queue.interface import Envelope, SpoolError
from trekmail.queue.maildir import MaildirWriter
from trekmail.queue.manager import CONTROL_SECONDS, MessageQueue
from trekmail.queue.retry import RetryPolicy
from trekmail.queue.returnpath import MAX_AGE_DAYS, ReturnPaths
from trekmail.queue.spool import Spool
from trekmail.queue.spoolformat import SpoolLayout
from trekmail.queue.suppression import Suppressions
from trekmail.realm import database, dkimkeys, schema
from trekmail.relay.dkim import Signature, Signer

NOW = 1795262400.0
MESSAGE = b"From: a@example.com\r\nTo: x@remote.test\r\nSubject: hi\r\n\r\nHello.\r\n"


class FakeTransport:
    """Answers each recipient with C{answers[recipient]} (default 250)."""

    def __init__(self):
        self.answers = {}
        self.calls = []

    def deliver(self, sender, recipients, message, sending_domain=None, queue_id=None):
        self.calls.append((sender, tuple(recipients), message))
        return defer.succeed([
            Outcome(r, *self.answers.get(r, (250, "2.0.0 ok")), remote="mx.remote.test [127.0.0.1]", reply=True)
            for r in recipients
        ])


class FakeSigner:
    def __init__(self):
        self.signed = 0

    def has_key(self, domain, selector):
        return True

    def signature(self, message, domain, selector, earlier=None, ed25519_selector=None):
        if earlier is not None:
            return earlier
        self.signed += 1
        return Signature((domain, selector, 0), b"DKIM-Signature: d=%s\r\n" % (domain.encode(),))


class Harness:
    def __init__(self, testcase, root=None):
        self.testcase = testcase
        self.root = root or os.path.abspath(testcase.mktemp())
        self.clock = Clock()
        self.clock.advance(NOW)
        self.reactor = SyncReactor(self.clock)
        self.directory = FakeDirectory()
        self.directory.add_domain("example.com", created=NOW - 30 * 86400)
        self.directory.add_mailbox("a@example.com")
        self.transport = FakeTransport()
        db = database.connect(os.path.join(self.root, "db.sqlite"))
        database.upgrade(db, schema.SCHEMAS)
        testcase.addCleanup(db.close)
        self.db = db
        self.start()

    def start(self):
        self.layout = SpoolLayout(os.path.join(self.root, "queue"))
        self.spool = Spool(self.layout, self.reactor, SyncPool(), writer=SyncPool())
        self.spool.start()
        self.suppressions = Suppressions(FakeDatabase(self.db), self.reactor, 3)
        self.suppressions.start()
        self.signer = FakeSigner()
        self.return_paths = ReturnPaths(lambda: [b"k" * 32], "mail.test", self.reactor)
        deliverer = Deliverer(
            directory=self.directory,
            router=Router(self.transport),
            signer=self.signer,
            suppressions=self.suppressions,
            reactor=self.reactor,
            workers=SyncPool(),
            mailboxes=MaildirWriter(self.root, "mail.test", self.reactor, writer=SyncPool()),
        )
        self.queue = MessageQueue(
            spool=self.spool,
            deliverer=deliverer,
            suppressions=self.suppressions,
            policy=RetryPolicy((300, 600, 1200, 2400, 3600), 5 * 86400),
            clock=self.reactor,
            hostname="mail.test",
            return_paths=self.return_paths,
        )
        self.queue.start()
        self.testcase.addCleanup(self.stop)

    def stop(self):
        self.queue.stop()
        self.suppressions.stop()

    def send(self, recipients, sender="a@example.com", message=MESSAGE, origin="submission"):
        ids = []
        self.queue.enqueue(Envelope(sender, tuple(recipients), origin), message).addCallback(ids.append)
        self.clock.advance(0)
        return ids[0]

    def inbox(self, address):
        return delivered(self.root, address)


def parse_report(data):
    report = email.message_from_bytes(data, policy=email.policy.compat32)
    parts = report.get_payload()
    status = parts[1].get_payload()
    return report, parts, status[0], status[1:]


class DeliveryTests(unittest.TestCase):
    def test_delivered_and_removed(self):
        h = Harness(self)
        h.send(["x@remote.test"])
        self.assertEqual(len(h.transport.calls), 1)
        sender, recipients, data = h.transport.calls[0]
        self.assertEqual((sender, recipients), ("a@example.com", ("x@remote.test",)))
        self.assertTrue(data.startswith(b"DKIM-Signature: d=example.com\r\n"))
        self.assertEqual(h.layout.queue_ids(), [])

    def test_write_error_fails_enqueue_and_keeps_nothing(self):
        h = Harness(self)
        os.rmdir(h.layout.log)
        with open(h.layout.log, "w"):
            pass
        failures = []
        h.queue.enqueue(Envelope("a@example.com", ("x@remote.test",), "submission"), MESSAGE).addErrback(failures.append)
        failures[0].trap(SpoolError)
        h.clock.advance(0)
        self.assertEqual((h.queue.entries(), h.layout.file_ids(), h.transport.calls), ([], [], []))

    def test_local_recipient_gets_maildir_copy(self):
        h = Harness(self)
        h.send(["a@example.com"], sender="someone@elsewhere.test", origin="mx")
        [copy] = h.inbox("a@example.com")
        self.assertTrue(copy.startswith(b"Return-Path: <someone@elsewhere.test>\r\nDelivered-To: a@example.com\r\n"))
        self.assertTrue(copy.endswith(MESSAGE))
        self.assertEqual(os.listdir(os.path.join(maildir_path(h.root, "a@example.com"), "tmp")), [])
        self.assertEqual(h.transport.calls, [])
        self.assertEqual(h.layout.queue_ids(), [])

    def test_unknown_local_recipient_is_reported(self):
        h = Harness(self)
        h.send(["nobody@example.com"])
        [report] = h.inbox("a@example.com")
        _, _, _, [recipient] = parse_report(report.split(b"\r\n", 2)[2])
        self.assertEqual(recipient["Final-Recipient"], "rfc822; nobody@example.com")
        self.assertEqual(recipient["Status"], "5.1.1")

    def test_partial_success_retries_only_the_rest(self):
        h = Harness(self)
        h.transport.answers["slow@remote.test"] = (451, "4.2.0 greylisted")
        h.send(["x@remote.test", "slow@remote.test"])
        del h.transport.answers["slow@remote.test"]
        h.clock.advance(300)
        self.assertEqual(h.transport.calls[-1][1], ("slow@remote.test",))
        self.assertEqual(h.layout.queue_ids(), [])


class RetryTests(unittest.TestCase):
    def test_backoff_schedule(self):
        h = Harness(self)
        h.transport.answers["x@remote.test"] = (451, "4.2.0 try later")
        h.send(["x@remote.test"])
        attempts = [len(h.transport.calls)]
        for step in (299, 1, 599, 1, 1199, 1, 2400, 3600, 3600):
            h.clock.advance(step)
            attempts.append(len(h.transport.calls))
        self.assertEqual(attempts, [1, 1, 2, 2, 3, 3, 4, 5, 6, 7])
        [entry] = h.queue.entries()
        self.assertEqual(entry["attempts"], 7)
        self.assertIn("4.2.0 try later", entry["errors"]["x@remote.test"])

    def test_retries_reuse_the_signature(self):
        h = Harness(self)
        h.transport.answers["x@remote.test"] = (451, "4.2.0 try later")
        h.send(["x@remote.test", "y@remote.test"])
        h.clock.advance(300)
        h.clock.advance(600)
        self.assertEqual(len(h.transport.calls), 3)
        self.assertEqual(h.signer.signed, 1)
        self.assertTrue(all(data.startswith(b"DKIM-Signature: d=example.com\r\n") for _, _, data in h.transport.calls))

    def test_expiry_sends_report(self):
        h = Harness(self)
        h.transport.answers["x@remote.test"] = (451, "4.2.0 try later")
        queue_id = h.send(["x@remote.test"])
        h.clock.advance(5 * 86400 - 1)
        self.assertEqual(h.inbox("a@example.com"), [])
        self.assertEqual(len(h.layout.queue_ids()), 1)
        for _ in range(3):
            h.clock.advance(3600)
        self.assertEqual(h.layout.queue_ids(), [])
        [data] = h.inbox("a@example.com")
        self.assertTrue(data.startswith(b"Return-Path: <>\r\n"))
        report, parts, per_message, [recipient] = parse_report(data)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        self.assertEqual(report["To"], "<a@example.com>")
        self.assertIn("MAILER-DAEMON@mail.test", report["From"])
        self.assertEqual(report["Auto-Submitted"], "auto-replied")
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        self.assertEqual(per_message["Reporting-MTA"], "dns; mail.test")
        self.assertEqual(per_message["X-Queue-ID"], queue_id)
        self.assertEqual(recipient["Action"], "failed")
        self.assertEqual(recipient["Status"], "4.4.7")
        self.assertEqual(recipient["Final-Recipient"], "rfc822; x@remote.test")
        self.assertEqual(recipient["Diagnostic-Code"], "smtp; 451 4.2.0 try later")
        self.assertIn("Subject: hi", parts[2].get_payload())
        self.assertNotIn("Hello.", parts[2].get_payload())

    def test_permanent_failure_reported_at_once(self):
        h = Harness(self)
        h.transport.answers["gone@remote.test"] = (550, "5.1.1 user unknown")
        h.send(["gone@remote.test"])
        [data] = h.inbox("a@example.com")
        _, _, _, [recipient] = parse_report(data)
        self.assertEqual(recipient["Status"], "5.1.1")
        self.assertEqual(recipient["Remote-MTA"], "dns; mx.remote.test")
        self.assertEqual(h.layout.queue_ids(), [])

    def test_bounce_is_never_bounced(self):
        h = Harness(self)
        h.transport.answers["gone@remote.test"] = (550, "5.1.1 user unknown")
        h.send(["gone@remote.test"], sender="")
        self.assertEqual(len(h.transport.calls), 1)
        self.assertEqual(h.layout.queue_ids(), [])
        self.assertEqual(h.inbox("a@example.com"), [])


class SuppressionTests(unittest.TestCase):
    def test_suppressed_after_three_hard_bounces(self):
        h = Harness(self)
        h.transport.answers["gone@remote.test"] = (550, "5.1.1 user unknown")
        for _ in range(3):
            h.send(["gone@remote.test"])
        self.assertEqual(len(h.transport.calls), 3)
        h.send(["gone@remote.test", "x@remote.test"])
        self.assertEqual(h.transport.calls[-1][1], ("x@remote.test",))
        reports = h.inbox("a@example.com")
        self.assertEqual(len(reports), 4)
        _, _, _, [recipient] = parse_report(reports[-1])
        self.assertIn("suppressed", recipient["Diagnostic-Code"])
        listed = queue_admin.suppression_list(h.db)
        self.assertEqual([(e["domain"], e["address"], e["hard_bounces"]) for e in listed],
                         [("example.com", "gone@remote.test", 3)])
        queue_admin.suppression_remove(h.db, "gone@remote.test")
        h.suppressions.reload()
        h.send(["gone@remote.test"])
        self.assertEqual(h.transport.calls[-1][1], ("gone@remote.test",))

    def test_policy_refusals_do_not_count(self):
        """A refused login at a provider or a spam verdict says nothing about the address."""
        h = Harness(self)
        h.transport.answers["x@remote.test"] = (535, "5.7.8 authentication failed")
        h.transport.answers["y@remote.test"] = (554, "5.4.1 port 25 refused")
        for _ in range(4):
            h.send(["x@remote.test", "y@remote.test"])
        self.assertEqual(h.transport.calls[-1][1], ("x@remote.test", "y@remote.test"))
        self.assertEqual(queue_admin.suppression_list(h.db), [])

    def test_forged_report_to_a_mailbox_suppresses_nothing(self):
        """Anybody can send a null-sender report naming anyone: it is mail, not a bounce."""
        h = Harness(self)
        for _ in range(3):
            h.send(["a@example.com"], sender="", message=_report(["dead@remote.test"]), origin="mx")
        self.assertEqual(len(h.inbox("a@example.com")), 3)
        self.assertFalse(h.suppressions.is_suppressed("example.com", "dead@remote.test"))
        self.assertEqual(_bounces(h), [])

    def test_report_to_a_signed_return_path_counts_its_recipient_once(self):
        h = Harness(self)
        queue_id = h.send(["dead@remote.test", "alive@remote.test"])
        path = h.return_paths.address(queue_id, "a@example.com", "dead@remote.test")
        report = _report(["dead@remote.test", "dead@remote.test", "alive@remote.test", "x@elsewhere.test"])
        h.send([path], sender="", message=report, origin="mx")
        self.assertEqual(_bounces(h), [("example.com", "dead@remote.test", 1)])
        [forwarded] = h.inbox("a@example.com")
        self.assertTrue(forwarded.endswith(report))
        self.assertEqual(h.layout.queue_ids(), [])
        for _ in range(2):
            h.send([path], sender="", message=report, origin="mx")
        self.assertTrue(h.suppressions.is_suppressed("example.com", "dead@remote.test"))
        self.assertFalse(h.suppressions.is_suppressed("example.com", "alive@remote.test"))

    def test_policy_status_in_a_genuine_report_does_not_count(self):
        h = Harness(self)
        path = h.return_paths.address(h.send(["x@remote.test"]), "a@example.com", "x@remote.test")
        h.send([path], sender="", message=_report(["x@remote.test"], status="5.7.1"), origin="mx")
        self.assertEqual(_bounces(h), [])
        self.assertEqual(len(h.inbox("a@example.com")), 1)

    def test_tampered_forged_and_expired_return_paths_are_ignored(self):
        h = Harness(self)
        queue_id = h.send(["dead@remote.test"])
        genuine = h.return_paths.address(queue_id, "a@example.com", "dead@remote.test")
        local, _, domain = genuine.partition("@")
        tampered = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
        other_key = ReturnPaths(lambda: [b"x" * 32], "mail.test", h.reactor)
        forged = other_key.address(queue_id, "a@example.com", "dead@remote.test")
        wrong_sender = h.return_paths.address(queue_id, "someone@example.com", "dead@remote.test")
        report = _report(["dead@remote.test"])
        for path in (tampered, forged, wrong_sender):
            h.send([path], sender="", message=report, origin="mx")
        h.clock.advance((MAX_AGE_DAYS + 1) * 86400)
        h.send([genuine], sender="", message=report, origin="mx")
        self.assertEqual(_bounces(h), [])
        self.assertEqual(h.inbox("a@example.com"), [])
        self.assertEqual(h.layout.queue_ids(), [])

    def test_report_on_a_suppressed_address_has_no_smtp_diagnostic(self):
        """TrekMail found it suppressed: no remote server said so (RFC 3464 section 2.3.6)."""
        h = Harness(self)
        h.transport.answers["gone@remote.test"] = (550, "5.1.1 user unknown")
        for _ in range(4):
            h.send(["gone@remote.test"])
        reports = h.inbox("a@example.com")
        _, _, _, [remote] = parse_report(reports[0])
        _, _, _, [suppressed] = parse_report(reports[-1])
        self.assertEqual(remote["Diagnostic-Code"], "smtp; 550 5.1.1 user unknown")
        self.assertTrue(suppressed["Diagnostic-Code"].startswith("X-TrekMail; 5.1.1 gone@remote.test is suppressed"))


def _bounces(h):
    """Every counted hard bounce, suppressed yet or not."""
    return [tuple(row) for row in h.db.execute("SELECT domain, address, count FROM hard_bounces ORDER BY address")]


def _report(recipients, status="5.1.1"):
    """A null-sender DSN as a remote MTA sends one back, returning our headers."""
    groups = b"".join(
        b"Final-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n"
        b"Diagnostic-Code: smtp; 550 %s no such user\r\n\r\n" % (r.encode(), status.encode(), status.encode())
        for r in recipients
    )
    return (
        b"From: MAILER-DAEMON@remote.test\r\nTo: a@example.com\r\nSubject: failed\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; remote.test\r\n\r\n"
        + groups
        + b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"From: Alice <A@example.com>\r\nTo: x@remote.test\r\nSubject: hi\r\n\r\n"
        b"--b--\r\n"
    )


class RestartTests(unittest.TestCase):
    def test_restart_resumes_with_state(self):
        h = Harness(self)
        h.transport.answers["x@remote.test"] = (451, "4.2.0 try later")
        queue_id = h.send(["x@remote.test"])
        h.stop()
        h.transport.answers.clear()
        h.start()
        h.clock.advance(0)
        [entry] = h.queue.entries()
        self.assertEqual((entry["queue_id"], entry["attempts"]), (queue_id, 1))
        self.assertEqual(len(h.transport.calls), 1)
        h.clock.advance(300)
        self.assertEqual(len(h.transport.calls), 2)
        self.assertEqual(h.layout.queue_ids(), [])


class ControlTests(unittest.TestCase):
    def test_operator_delete_and_flush(self):
        h = Harness(self)
        h.transport.answers["x@remote.test"] = (451, "4.2.0 try later")
        first = h.send(["x@remote.test"])
        second = h.send(["x@remote.test"])
        listed = queue_admin.queue_list(os.path.join(h.root, "queue"))
        self.assertEqual([e["queue_id"] for e in listed], sorted([first, second]))
        self.assertEqual(listed[0]["attempts"], 1)
        queue_admin.queue_delete(os.path.join(h.root, "queue"), first)
        queue_admin.queue_flush(os.path.join(h.root, "queue"))
        h.clock.advance(CONTROL_SECONDS)
        self.assertEqual([e["queue_id"] for e in h.queue.entries()], [second])
        self.assertEqual(len(h.transport.calls), 3)
        self.assertEqual(h.transport.calls[-1][1], ("x@remote.test",))


class RetryPolicyTests(unittest.TestCase):
    def test_schedule_grows_then_repeats_and_ends_at_expiry(self):
        policy = RetryPolicy((300, 600, 3600), max_age=86400)
        self.assertEqual([policy.next_attempt(n, 0, 1000) - 1000 for n in (1, 2, 3, 9)], [300, 600, 3600, 3600])
        self.assertEqual(policy.next_attempt(5, 0, 86000), 86400)
        self.assertIsNone(policy.next_attempt(5, 0, 86400))

    def test_configured(self):
        config = Config.from_text("[queue]\nretry_intervals = 60 120\nmax_age = 3600\n")
        self.assertEqual((config.get("queue", "retry_intervals"), config.get("queue", "max_age")), ((60, 120), 3600))
        with self.assertRaises(ConfigError) as caught:
            Config.from_text("[queue]\nretry_intervals = 0\n")
        self.assertIn("[queue] retry_intervals", str(caught.exception))


class SigningFailureTests(unittest.TestCase):
    """A signing failure is reported as what failed, never as a missing key it is not."""

    def harness(self, with_key):
        h = Harness(self)
        data_dir = os.path.join(h.root, "data")
        os.makedirs(os.path.join(data_dir, "dkim"))
        if with_key:
            dkimkeys.generate(data_dir, "example.com")
        h.signer.signature = Signer(data_dir, h.clock.seconds).signature
        return h

    def test_missing_key_waits_and_says_so(self):
        h = self.harness(with_key=False)
        h.send(["x@remote.test"])
        [entry] = h.queue.entries()
        self.assertIn("451 4.3.0 DKIM key of example.com (selector dkim) is missing",
                      entry["errors"]["x@remote.test"])
        self.assertEqual(h.transport.calls, [])

    def test_unsignable_message_fails_for_good_with_its_reason(self):
        h = self.harness(with_key=True)
        h.send(["x@remote.test"], message=b"From: a@example.com\r\nnot a header\r\n\r\nHello.\r\n")
        self.assertEqual(h.queue.entries(), [])
        report, _, _, [status] = parse_report(h.inbox("a@example.com")[0])
        self.assertEqual(status["Status"], "5.6.0")
        self.assertIn("cannot DKIM-sign: malformed header line 'not a header'", status["Diagnostic-Code"])
        self.assertNotIn("unavailable", status["Diagnostic-Code"])


class TraceTests(unittest.TestCase):
    def test_trace_names_the_queue_id_and_is_stored_first(self):
        h = Harness(self)
        h.transport.answers["x@remote.test"] = (451, "4.2.0 try later")
        ids = []
        h.queue.enqueue(Envelope("a@example.com", ("x@remote.test",), "submission"), MESSAGE,
                        lambda queue_id: b"Received: id %s\r\n" % (queue_id.encode(),)).addCallback(ids.append)
        h.clock.advance(0)
        [(_, _, data)] = h.transport.calls
        self.assertTrue(data.startswith(b"DKIM-Signature: d=example.com\r\nReceived: id %s\r\nFrom: " % (
            ids[0].encode(),)))
