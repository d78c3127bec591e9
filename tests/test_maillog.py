"""
The mail log (L{trekmail.maillog}): its one-line format, the events a
message and a login leave behind on every path, and C{log trace}.
"""

import os
import smtplib
from io import StringIO

from twisted.internet import defer, threads
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent, formatEventAsClassicLogText
from twisted.trial import unittest

from tests import test_dav, test_relay_delivery
from tests.imap_inline import Session
from tests.smtp_site import PASSWORD, client_context
from tests.support import capture
from trekmail import cli, maillog
from trekmail.dav.auth import LoginRefused, Logins
from trekmail.mailstore import maildir_path
from trekmail.policy.logins import LoginGuard
from trekmail.queue.interface import Envelope


log = Logger(namespace="test")



def outcome_of(line):
    return line.rpartition(" outcome=")[2].split(" ", 1)[0]


def lines(events, kind=None):
    return [formatEvent(e) for e in events if kind is None or e["log_trekmail"] == kind]


class LineTests(unittest.TestCase):
    def test_each_kind_is_one_postfix_like_line(self):
        self.assertEqual(
            maillog.line(maillog.ACCEPTED, queue_id="Q1", listener="mx", client_address="192.0.2.1",
                         client_name="pc.example", user=None, sender="a@example.com", recipients=2, size=120,
                         message_id="<m@example.com>"),
            "Q1: accepted from=<a@example.com> client=pc.example[192.0.2.1] user=- size=120 nrcpt=2"
            " msgid=<m@example.com> listener=mx")
        self.assertEqual(
            maillog.line(maillog.DELIVERY, queue_id="Q1", recipient="b@example.net", route="managed",
                         host="mx.example.net", address="198.51.100.7", source="203.0.113.5", tls="TLSv1.3",
                         tls_verified=False, delay=1.25, reply="250 2.0.0 ok", outcome="delivered"),
            'Q1: to=<b@example.net> route=managed relay=mx.example.net[198.51.100.7] source=203.0.113.5'
            ' tls=TLSv1.3 verified=no delay=1.2 outcome=delivered reply="250 2.0.0 ok"')
        self.assertEqual(maillog.line(maillog.DELIVERY, queue_id="Q1", recipient="c@example.com", route="local",
                                      host=None, address=None, source=None, tls=None, tls_verified=False,
                                      delay=0.0, reply="250 2.0.0 delivered to mailbox", outcome="delivered"),
                         'Q1: to=<c@example.com> route=local relay=local source=- tls=- verified=no delay=0.0'
                         ' outcome=delivered reply="250 2.0.0 delivered to mailbox"')
        self.assertEqual(maillog.line(maillog.LOCAL_DELIVERY, queue_id="Q1", mailbox="c@example.com",
                                      folder="INBOX"), "Q1: stored mailbox=<c@example.com> folder=INBOX")
        self.assertEqual(maillog.line(maillog.REPORT, queue_id="Q1", recipient="a@example.com", kind="failure",
                                      report_id="Q2"), "Q1: report kind=failure notify=<a@example.com> id=Q2")
        self.assertEqual(maillog.line(maillog.LOGIN, protocol="imap", client_address="192.0.2.1",
                                      mailbox="alice@x", outcome="ok"), "login imap alice@x [192.0.2.1] ok")
        self.assertEqual(maillog.line(maillog.REFUSED, protocol="smtp", listener="mx", client_address="192.0.2.1",
                                      code="550 5.7.1", reason="recipient"),
                         'refused smtp mx [192.0.2.1] "550 5.7.1" recipient')

    def test_values_cannot_break_the_line_or_the_format(self):
        """A HELO or a reply with spaces, CR LF, quotes or braces stays one line with its fields where they were."""
        events = capture(self)
        maillog.emit(log, maillog.ACCEPTED,
                     queue_id="Q1", listener="mx", client_address="192.0.2.1", client_name="evil\r\nQ9: to=<x> {x}",
                     user=None, sender="", recipients=1, size=1, message_id=None)
        maillog.emit(log, maillog.DELIVERY, queue_id="Q1", recipient="b@example.net", route="managed",
                     host="h", address="a", source=None, tls=None, tls_verified=False, delay=None,
                     reply='550 "no" \\ {here}\r\nQ9: x', outcome="bounced")
        [accepted, delivery] = lines(events)
        self.assertEqual(accepted, "Q1: accepted from=<> client=evil??Q9:?to=<x>?{x}[192.0.2.1] user=- size=1"
                                   " nrcpt=1 msgid=- listener=mx")
        self.assertTrue(delivery.endswith(r'reply="550 \"no\" \\ {here}??Q9: x"'), delivery)
        self.assertEqual(events[0]["client_name"], "evil\r\nQ9: to=<x> {x}")

    def test_message_id(self):
        self.assertEqual(maillog.message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nMessage-ID: <no>\r\n"),
                         "<a@b>")
        self.assertIsNone(maillog.message_id(b"Subject: x\r\n\r\nMessage-ID: <in-body>\r\n"))


LOG = """\
2026-11-21T12:00:00+0000 [trekmail.smtp.submission.SubmissionServer#info] Q1: accepted from=<a@example.com> \
client=pc[192.0.2.1] user=a@example.com size=10 nrcpt=1 msgid=- listener=submission
2026-11-21T12:00:01+0000 [trekmail.queue.manager#info] Q1: to=<b@remote.test> route=managed relay=-[-] \
source=- tls=- verified=no delay=1.0 outcome=bounced reply="550 5.1.1 no"
2026-11-21T12:00:01+0000 [trekmail.queue.manager#info] Q1: report kind=failure notify=<a@example.com> id=Q2
2026-11-21T12:00:02+0000 [trekmail.imap.server.IMAPServer#info] login imap a@example.com [192.0.2.1] ok
2026-11-21T12:00:02+0000 [trekmail.queue.manager#info] Q3: to=<c@remote.test> route=managed relay=-[-] \
source=- tls=- verified=no delay=1.0 outcome=deferred reply="451 later"
2026-11-21T12:00:03+0000 [trekmail.queue.delivery#info] Q2: stored mailbox=<a@example.com> folder=INBOX
2026-11-22T08:00:00+0000 [trekmail.queue.manager#info] Q3: to=<c@remote.test> route=managed relay=-[-] \
source=- tls=- verified=no delay=9.0 outcome=delivered reply="250 ok"
"""


class TraceTests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "twistd.log")
        os.makedirs(os.path.dirname(self.path))
        older, newer = LOG.split("2026-11-22", 1)
        with open(self.path + ".1", "w") as f:
            f.write(older)
        with open(self.path, "w") as f:
            f.write("2026-11-22" + newer)

    def test_queue_id_and_its_report(self):
        found = maillog.trace(maillog.log_files(self.path), "Q1")
        self.assertEqual([line.split("] ", 1)[1][:2] for line in found], ["Q1", "Q1", "Q1", "Q2"])

    def test_address_finds_its_messages_and_logins(self):
        found = maillog.trace(maillog.log_files(self.path), "A@example.com")
        self.assertEqual(len(found), 5)
        self.assertIn("login imap a@example.com", found[3])
        self.assertEqual([line.rsplit(" ", 1)[1] for line in maillog.trace(maillog.log_files(self.path),
                                                                            "c@remote.test")], ['later"', 'ok"'])

    def test_since(self):
        self.assertEqual(len(maillog.trace(maillog.log_files(self.path), "Q3", since="2026-11-22")), 1)
        self.assertEqual(len(maillog.trace(maillog.log_files(self.path), "Q3", since="2026-11-21T13:00+01:00")), 2)

    def test_cli(self):
        out, err = StringIO(), StringIO()
        code = cli.main(["log", "trace", "Q3", "--file", self.path], stdout=out, stderr=err)
        self.assertEqual((code, len(out.getvalue().splitlines())), (0, 2), err.getvalue())
        code = cli.main(["log", "trace", "Q3", "--file", self.path + ".none"], stdout=out, stderr=err)
        self.assertEqual(code, 1)
        self.assertIn("cannot read the log", err.getvalue())


class MessageTests(unittest.TestCase):
    """
    One message through every outcome, on the real relay over loopback
    (L{tests.test_relay_delivery}'s DNS and sink): remote, local, deferred,
    bounced with its report, suppressed; and SMTP logins.
    """

    setUp = test_relay_delivery.RelayTests.setUp
    submission = test_relay_delivery.RelayTests.submission
    wait_until = test_relay_delivery.RelayTests.wait_until

    @defer.inlineCallbacks
    def test_every_outcome(self):
        events = capture(self)
        suppressions = self.service.suppressions
        while not suppressions.is_suppressed("example.com", "gone@remote.test"):
            yield suppressions.record("example.com", "gone@remote.test", "550 5.1.1 gone")
        yield self.wait_until(lambda: self.queue.started)
        recipients = ("bob@remote.test", "alice@example.com", "x@nowhere.test", "y@broken.test", "gone@remote.test")
        queue_id = yield self.queue.enqueue(
            Envelope("alice@example.com", recipients, "submission", authenticated_as="alice@example.com"),
            b"From: alice@example.com\r\nSubject: all\r\n\r\nhi\r\n")
        new = os.path.join(maildir_path(self.config.data_dir, "alice@example.com"), "new")
        yield self.wait_until(lambda: len(lines(events, maillog.LOCAL_DELIVERY)) == 2)
        yield self.sink.wait_for(1)
        self.assertEqual(len(os.listdir(new)), 2)
        deliveries = {e["recipient"]: e for e in events
                      if e["log_trekmail"] == maillog.DELIVERY and e["queue_id"] == queue_id}
        self.assertEqual({r: e["outcome"] for r, e in deliveries.items()}, {
            "bob@remote.test": "delivered", "alice@example.com": "delivered", "x@nowhere.test": "bounced",
            "y@broken.test": "deferred", "gone@remote.test": "suppressed"})
        remote = deliveries["bob@remote.test"]
        self.assertEqual((remote["route"], remote["host"], remote["address"]), ("managed", "mx.remote.test",
                                                                                 "127.0.0.1"))
        self.assertEqual(remote["source"], "127.0.0.3")  # the "new" pool: the domain was just added
        self.assertTrue(remote["tls"].startswith("TLSv1"))
        self.assertFalse(remote["tls_verified"])
        self.assertGreaterEqual(remote["delay"], 0)
        self.assertEqual(deliveries["alice@example.com"]["route"], "local")
        self.assertIn("4.4.3", deliveries["y@broken.test"]["reply"])
        [report] = [e for e in events if e["log_trekmail"] == maillog.REPORT]
        self.assertEqual((report["queue_id"], report["recipient"], report["kind"]),
                         (queue_id, "alice@example.com", "failure"))
        stored = {(e["queue_id"], e["mailbox"], e["folder"]) for e in events
                  if e["log_trekmail"] == maillog.LOCAL_DELIVERY}
        self.assertEqual(stored, {(queue_id, "alice@example.com", "INBOX"),
                                  (report["report_id"], "alice@example.com", "INBOX")})
        text = lines(events)
        self.assertIn("%s: to=<bob@remote.test> route=managed relay=mx.remote.test[127.0.0.1] source=127.0.0.3 tls=TLSv1"
                      % (queue_id,), "\n".join(text))

        traced = self.log_trace(events, queue_id)
        self.assertEqual(sorted(outcome_of(line) for line in traced if " to=<" in line and queue_id + ":" in line),
                         sorted(["bounced", "deferred", "delivered", "delivered", "suppressed"]))
        self.assertIn("%s: stored mailbox=<alice@example.com> folder=INBOX" % (queue_id,), traced)
        self.assertIn(report["report_id"], "\n".join(traced), "the report follows the message it reports on")
        by_address = self.log_trace(events, "gone@remote.test")
        self.assertEqual([outcome_of(line) for line in by_address if "to=<gone@remote.test>" in line], ["suppressed"])
        self.flushLoggedErrors(RuntimeError)

    def log_trace(self, events, target):
        """C{trekmail log trace TARGET} over the events as twistd's log file has them: its output lines."""
        path = os.path.join(self.mktemp(), "twistd.log")
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as f:
            f.writelines(formatEventAsClassicLogText(e) for e in events)
        out, err = StringIO(), StringIO()
        self.assertEqual(cli.main(["log", "trace", target, "--file", path], stdout=out, stderr=err), 0, err.getvalue())
        return [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]

    @defer.inlineCallbacks
    def test_submission_accepted_and_smtp_logins(self):
        events = capture(self)
        port = self.submission()
        yield self.wait_until(lambda: self.queue.started)

        def send():
            c = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.example", context=client_context(),
                                 timeout=30)
            try:
                c.login("alice@example.com", "not the password")
            except smtplib.SMTPAuthenticationError:
                pass
            c.login("alice@example.com", PASSWORD)
            c.sendmail("alice@example.com", ["bob@remote.test"],
                       b"From: alice@example.com\r\nMessage-ID: <m1@example.com>\r\n\r\nhi\r\n")
            c.quit()

        yield threads.deferToThread(send)
        yield self.sink.wait_for(1)
        # smtplib tries PLAIN, then LOGIN, with the wrong password: two failures.
        self.assertEqual(lines(events, maillog.LOGIN), ["login smtp alice@example.com [127.0.0.1] failed"] * 2
                         + ["login smtp alice@example.com [127.0.0.1] ok"])
        [accepted] = [e for e in events if e["log_trekmail"] == maillog.ACCEPTED]
        self.assertEqual((accepted["listener"], accepted["client_name"], accepted["user"], accepted["sender"],
                          accepted["recipients"], accepted["message_id"]),
                         ("submissions", "client.example", "alice@example.com", "alice@example.com", 1,
                          "<m1@example.com>"))
        self.assertNotIn("not the password", repr(events))
        self.assertNotIn(PASSWORD, repr(events))


class LoginTests(unittest.TestCase):
    """IMAP and DAV: an ok and a failed login each leave a C{login} event, and no password."""

    def test_imap(self):
        events = capture(self)
        session = Session(self).connect()
        self.assertTrue(session.command(b"a LOGIN alice@example.com wrong")[1].startswith(b"a NO"))
        answer = session.command(b"b LOGIN alice@example.com pw")
        self.assertTrue(answer[1].startswith(b"b OK"), answer)
        self.assertEqual(lines(events), ["login imap alice@example.com [127.0.0.1] failed",
                                         "login imap alice@example.com [127.0.0.1] ok"])
        self.assertNotIn("wrong", repr(events))

    def test_dav(self):
        events = capture(self)
        clock = Clock()
        logins = Logins(test_dav.FakeChecker(), LoginGuard(clock))
        results = []
        logins.login("alice@example.com", "wrong", "192.0.2.1").addBoth(results.append)
        logins.login("Alice@example.com", test_dav.PASSWORD, "192.0.2.1").addBoth(results.append)
        self.assertIsInstance(results[0].value, LoginRefused)
        self.assertEqual(results[1], "alice@example.com")
        self.assertEqual(lines(events), ["login dav alice@example.com [192.0.2.1] failed",
                                         "login dav alice@example.com [192.0.2.1] ok"])
        self.assertNotIn("wrong", repr(events))
        self.assertNotIn(test_dav.PASSWORD, repr(events))
