"""
Plan limits through the submission door: the hourly window and the UTC
midnight reset on a task.Clock, warmup, upgrades, one count per message,
concurrent sessions over real sockets; the failed-login throttle over
StringTransports.
"""

import base64

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.fakes import FakeChecker, TLSStringTransport, login_only_submission, replies
from tests.smtp_site import LATER, Site, send
from tests.test_smtp_auth import Realm
from trekmail.policy.logins import LoginGuard
from trekmail.policy import counters
from trekmail.policy.limits import DAY, HOUR, next_midnight
from trekmail.policy.throttle import AuthThrottle



class LimitTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)

    def send_many(self, count, login="alice@example.com", recipients=("bob@remote.test",)):
        """Send C{count} messages in one session; the last reply of each."""

        def run():
            client = self.site.connect("submissions", login=login)
            try:
                return [send(client, login, recipients)[-1] for _ in range(count)]
            finally:
                client.close()

        return self.site.in_thread(run)

    def counts(self, account, mailbox="alice@example.com"):
        return self.site.database.run(counters.counts, mailbox, account.id, self.site.clock.seconds())

    @defer.inlineCallbacks
    def test_hourly_cap_is_a_rolling_hour(self):
        account = self.site.account(trial=True)
        first = yield self.send_many(10)
        self.site.clock.advance(1800)
        second = yield self.send_many(6)
        self.assertEqual([c for c, _ in first + second], [250] * 15 + [421])
        self.assertTrue(second[-1][1].startswith("4.7.0 temporarily blocked: this account may send 15 messages an hour"))
        self.site.clock.advance(1799)
        self.assertEqual((yield self.send_many(1))[0][0], 421)
        self.site.clock.advance(1)
        self.assertEqual([c for c, _ in (yield self.send_many(11))], [250] * 10 + [421])
        self.assertEqual((yield self.counts(account)).mailbox_day, 25)

    @defer.inlineCallbacks
    def test_daily_mailbox_cap_resets_at_utc_midnight(self):
        self.site.account(trial=True)
        self.site.clock.advance(next_midnight(LATER) - LATER - 3 * HOUR)
        replies = yield self.send_many(15)
        self.site.clock.advance(HOUR)
        replies += yield self.send_many(16)
        self.assertEqual([c for c, _ in replies], [250] * 30 + [451])
        self.assertTrue(replies[-1][1].startswith("4.7.1 user has exceeded sending quota: this mailbox may send 30"))
        self.site.clock.advance(2 * HOUR - 1)
        self.assertEqual((yield self.send_many(1))[0][0], 451)
        self.site.clock.advance(1)
        self.assertEqual((yield self.send_many(1))[0][0], 250)

    @defer.inlineCallbacks
    def test_daily_account_cap_across_mailboxes(self):
        self.site.account(trial=True, mailboxes=("a", "b", "c", "d"))
        replies = []
        for login, count in (("a", 15), ("b", 15), ("c", 15), ("d", 6)):
            replies += yield self.send_many(count, login="%s@example.com" % login)
            self.site.clock.advance(HOUR)
        self.assertEqual([c for c, _ in replies], [250] * 50 + [451])
        self.assertIn("this account may send 50", replies[-1][1])

    @defer.inlineCallbacks
    def test_message_counts_once_whatever_its_recipients(self):
        account = self.site.account(trial=True)
        replies = yield self.send_many(3, recipients=["r%d@remote.test" % i for i in range(10)])
        self.assertEqual([c for c, _ in replies], [250] * 3)
        counts = yield self.counts(account)
        self.assertEqual((counts.mailbox_day, counts.account_day, counts.account_hour), (3, 3, 3))

    @defer.inlineCallbacks
    def test_warmup(self):
        self.site.account(trial=True)
        created = self.site.clock.seconds() - 10 * DAY
        self.site.clock.advance(created + 2 * DAY - self.site.clock.seconds())  # day 3: 40 %
        replies = yield self.send_many(13)
        self.assertEqual([c for c, _ in replies], [250] * 12 + [451])
        self.assertIn("may send 12 messages a day", replies[-1][1])
        self.site.clock.advance(created + 3 * DAY + HOUR - self.site.clock.seconds())
        # day 4 (and a new UTC day): 70 % of 30 = 21
        replies = yield self.send_many(15)
        self.site.clock.advance(HOUR)
        replies += yield self.send_many(7)
        self.assertEqual([c for c, _ in replies], [250] * 21 + [451])

    @defer.inlineCallbacks
    def test_upgrade_applies_at_once_without_reset(self):
        account = self.site.account(trial=True)
        replies = yield self.send_many(16)
        self.assertEqual(replies[-1][0], 421)
        self.site.admin.account_set(account.id, paid=True)
        replies = yield self.send_many(2)
        self.assertEqual([c for c, _ in replies], [250, 250])
        counts = yield self.counts(account)
        self.assertEqual((counts.mailbox_day, counts.account_hour), (17, 17))

    @defer.inlineCallbacks
    def test_counters_survive_a_restart(self):
        account = self.site.account(trial=True)
        self.assertEqual([c for c, _ in (yield self.send_many(12))], [250] * 12)
        yield self.site.restart()
        self.assertEqual([c for c, _ in (yield self.send_many(4))], [250] * 3 + [421])
        counts = yield self.counts(account)
        self.assertEqual((counts.mailbox_day, counts.account_day, counts.account_hour), (15, 15, 15))

    @defer.inlineCallbacks
    def test_concurrent_sessions_never_exceed_the_cap(self):
        account = self.site.account(trial=True, mailboxes=("a", "b", "c", "d"))
        logins = ["%s@example.com" % m for m in "abcd"] * 6

        def one(login):
            client = self.site.connect("submissions", login=login)
            try:
                return send(client, login)[-1][0]
            finally:
                client.close()

        results = yield defer.gatherResults([self.site.in_thread(one, login) for login in logins])
        self.assertEqual(sorted(results), [250] * 15 + [421] * 9)
        self.assertEqual(len(self.site.queue.messages), 15)
        counts = yield self.counts(account, "a@example.com")
        self.assertEqual(counts.account_hour, 15)


class ThrottleTests(unittest.TestCase):
    """The failed-login throttle through the door, on a task.Clock: each hold is a timer, not a wait."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(LATER)
        self.checker = FakeChecker()
        self.checker.held = []
        guard = LoginGuard(self.clock, AuthThrottle(free=2, base_delay=1.0, max_delay=2.0, disconnect_after=8),
                           in_progress=3)
        self.factory = login_only_submission(Realm(), self.checker, self.clock, guard)

    def attempt(self, password, source="127.0.0.1"):
        """A session from C{source} that has sent AUTH PLAIN: (protocol, transport)."""
        server = self.factory.buildProtocol(None)
        transport = TLSStringTransport(peerAddress=IPv4Address("TCP", source, 40000))
        server.makeConnection(transport)
        server.dataReceived(b"EHLO c\r\n")
        replies(transport)
        server.dataReceived(b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0" + password.encode())
                            + b"\r\n")
        return server, transport

    def answer(self, transport):
        """The reply codes so far."""
        return [int(line[:3]) for line in replies(transport)]

    def test_burst_of_bad_passwords(self):
        for delay in (0, 0, 1, 2):
            _, transport = self.attempt("wrong")
            self.checker.release()
            if delay:
                self.assertEqual(self.answer(transport), [])
                self.clock.advance(delay - 0.001)
                self.assertEqual(self.answer(transport), [])
                self.clock.advance(0.001)
            self.assertEqual(self.answer(transport), [535])
        parallel = [self.attempt("wrong")[1] for _ in range(4)]
        self.assertEqual(self.answer(parallel[3]), [454], "at most 3 checks of one address at once")
        self.checker.release()
        self.assertEqual([self.answer(t) for t in parallel[:3]], [[], [], []], "parallel sessions share the throttle")
        self.clock.advance(2)
        self.assertEqual([self.answer(t) for t in parallel[:3]], [[535], [535], [535]])
        _, last = self.attempt("wrong")
        self.checker.release()
        self.clock.advance(2)
        self.assertEqual(self.answer(last), [535, 421])
        _, refused = self.attempt("pw")
        self.assertEqual(self.answer(refused), [421])
        _, other = self.attempt("pw", source="127.0.0.2")
        self.checker.release()
        self.assertEqual(self.answer(other), [235])
