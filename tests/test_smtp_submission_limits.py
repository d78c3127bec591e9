"""
Plan limits through the submission door: the hourly window and the UTC
midnight reset on a task.Clock, warmup, upgrades, one count per message,
concurrent sessions, and the failed-login throttle over real sockets.
"""

import smtplib
import time

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.smtp_site import LATER, PASSWORD, Site, send
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
    def setUp(self):
        self.throttle = AuthThrottle(free=2, base_delay=1.0, max_delay=2.0, disconnect_after=6)
        self.site = Site(self, throttle=self.throttle, clock=reactor, in_progress=3)
        self.site.account()

    def attempt(self, password, source="127.0.0.1"):
        def run():
            started = time.monotonic()
            try:
                client = self.site.connect("submissions", source=source)
            except smtplib.SMTPServerDisconnected:
                return "disconnected", time.monotonic() - started
            try:
                client.auth("PLAIN", lambda challenge=None: "\0alice@example.com\0%s" % (password,))
                return 235, time.monotonic() - started
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code, time.monotonic() - started
            except smtplib.SMTPServerDisconnected:
                return "disconnected", time.monotonic() - started
            finally:
                client.close()

        return self.site.in_thread(run)

    @defer.inlineCallbacks
    def test_burst_of_bad_passwords(self):
        results = []
        for _ in range(4):
            results.append((yield self.attempt("wrong")))
        self.assertEqual([code for code, _ in results], [535] * 4)
        self.assertLess(results[0][1], 1.0)
        self.assertGreaterEqual(results[2][1], 1.0)
        self.assertGreaterEqual(results[3][1], 2.0)
        parallel = yield defer.gatherResults([self.attempt("wrong") for _ in range(4)])
        for code, elapsed in parallel:
            self.assertIn(code, (535, 421, 454))
            if code == 535:
                self.assertGreaterEqual(elapsed, 2.0, "parallel connections share the throttle")
        refused = yield self.attempt(PASSWORD)
        self.assertEqual(refused[0], 421)
        other = yield self.attempt(PASSWORD, source="127.0.0.2")
        self.assertEqual(other[0], 235)
        self.assertLess(other[1], 1.0)
