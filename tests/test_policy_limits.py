"""
Caps, warmup and the counters: pure rules on a task.Clock, and the sqlite
counters across a restart and under concurrent callers.
"""

import dataclasses
import datetime
import threading

from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.delivery_support import FakeDatabase
from tests.support import NOON
from trekmail.plans import TRIAL_CAPS, plan_named
from trekmail.policy import counters, limits
from trekmail.policy.tally import Tally
from trekmail.realm import database, schema
from trekmail.realm.model import Account, Domain, Mailbox, MailboxContext


def context(plan="starter", paid=True, created=NOON - 30 * limits.DAY, route=None):
    return MailboxContext(
        Mailbox("alice@example.com", "example.com", "x", False),
        Domain("example.com", 1, created, "dkim", "key", route=route),
        Account(1, "owner@example.net", True, datetime.date(2026, 1, 1), plan, paid, None),
    )


class CapsTests(unittest.TestCase):
    def test_plan_and_trial(self):
        self.assertEqual(limits.caps_for(context(), NOON), plan_named("starter").managed)
        self.assertEqual(limits.caps_for(context(paid=False), NOON), TRIAL_CAPS)
        self.assertEqual(limits.caps_for(context("pro", route="profile:1"), NOON), plan_named("pro").byo)

    def test_warmup_days(self):
        clock = Clock()
        clock.advance(NOON)
        ctx = context(created=NOON)
        seen = []
        for _ in range(9):
            caps = limits.caps_for(ctx, clock.seconds())
            seen.append((caps.per_mailbox_day, caps.per_account_day, caps.per_account_hour))
            clock.advance(limits.DAY)
        self.assertEqual(seen, [(400, 2400, 500)] * 3 + [(700, 4200, 500)] * 4 + [(1000, 6000, 500)] * 2)
        clock.advance(-limits.DAY * 6 - 1)
        self.assertEqual(limits.caps_for(ctx, clock.seconds()).per_mailbox_day, 400)

    def test_no_warmup_off_the_managed_route(self):
        caps = limits.caps_for(context("nano", created=NOON, route="profile:1"), NOON)
        self.assertEqual(caps, plan_named("nano").byo)

    def test_over_limit_order(self):
        caps = plan_named("starter").managed
        self.assertIsNone(limits.over_limit(caps, limits.Counts(999, 5999, 499)))
        self.assertEqual(limits.over_limit(caps, limits.Counts(1000, 0, 500)).kind, limits.DAILY)
        self.assertEqual(limits.over_limit(caps, limits.Counts(0, 6000, 0)).kind, limits.DAILY)
        self.assertEqual(limits.over_limit(caps, limits.Counts(0, 0, 500)).kind, limits.HOURLY)
        self.assertIsNone(limits.over_limit(plan_named("pro").byo, limits.Counts(10**6, 10**6, 10**6)))

    def test_recipients(self):
        caps = plan_named("starter").managed
        self.assertIsNone(limits.recipients_denial(caps, 100))
        self.assertEqual(limits.recipients_denial(caps, 101).kind, limits.RECIPIENTS)


class TallyTests(unittest.TestCase):
    """The caps decided in memory, with every change written behind to sqlite."""

    def setUp(self):
        self.path = self.mktemp()
        self.db = self.open()
        self.clock = Clock()
        self.clock.advance(NOON)
        self.tally = Tally(FakeDatabase(self.db), self.clock)
        self.caps = dataclasses.replace(TRIAL_CAPS, per_mailbox_day=5, per_account_day=8, per_account_hour=3)

    def open(self):
        db = database.connect(self.path)
        database.upgrade(db, schema.SCHEMAS)
        self.addCleanup(db.close)
        return db

    def record(self, mailbox="a@example.com", account=1, tally=None):
        results = []
        (tally or self.tally).check_and_record(mailbox, account, self.caps, self.clock.seconds()).addCallback(
            results.append
        )
        return results[0]

    def saved(self, mailbox="a@example.com", account=1):
        return counters.counts(self.db, mailbox, account, self.clock.seconds())

    def test_rolling_hour(self):
        for _ in range(3):
            self.assertIsNone(self.record()[0])
            self.clock.advance(600)
        self.assertEqual(self.record()[0].kind, limits.HOURLY)
        self.clock.advance(1799)
        self.assertEqual(self.record()[0].kind, limits.HOURLY)
        self.clock.advance(1)
        self.assertIsNone(self.record()[0])
        self.assertEqual(self.saved(), limits.Counts(4, 4, 3))

    def test_midnight_reset(self):
        for _ in range(5):
            self.assertIsNone(self.record()[0])
            self.clock.advance(3600)
        self.assertEqual(self.record()[0].kind, limits.DAILY)
        self.clock.advance(limits.next_midnight(self.clock.seconds()) - self.clock.seconds() - 1)
        self.assertEqual(self.record()[0].kind, limits.DAILY)
        self.clock.advance(1)
        self.assertIsNone(self.record()[0])
        self.assertEqual(self.saved(), limits.Counts(1, 1, 1))

    def test_release(self):
        self.record()
        denial, receipt = self.record()
        self.tally.release(receipt)
        expected = limits.Counts(1, 1, 1)
        counted = []
        self.tally.counts("a@example.com", 1, self.clock.seconds()).addCallback(counted.append)
        self.assertEqual((counted, self.saved()), ([expected], expected))

    def test_release_of_a_message_counted_before_midnight(self):
        denial, receipt = self.record()
        self.clock.advance(limits.next_midnight(self.clock.seconds()) - self.clock.seconds())
        self.record()
        self.tally.release(receipt)
        self.assertEqual(self.saved(), limits.Counts(1, 1, 1))

    def test_survive_restart(self):
        self.record()
        self.record(mailbox="b@example.com")
        self.db.close()
        self.db = self.open()
        restarted = Tally(FakeDatabase(self.db), self.clock)
        self.assertIsNone(self.record(tally=restarted)[0])
        self.assertEqual(self.record(tally=restarted)[0].kind, limits.HOURLY)
        self.assertEqual(self.saved("A@example.com"), limits.Counts(2, 3, 3))

    def test_idle_ones_are_forgotten_and_loaded_again(self):
        self.record()
        self.record()
        self.clock.advance(limits.HOUR + 1)
        self.record(mailbox="b@example.com", account=2)
        self.assertNotIn("a@example.com", self.tally._mailboxes)
        self.db.execute("UPDATE send_daily SET count = 4 WHERE key = 'a@example.com'")
        self.assertIsNone(self.record()[0])
        self.assertEqual(self.record()[0].kind, limits.DAILY)

    @defer.inlineCallbacks
    def test_concurrent_sessions_never_both_take_the_last_slot(self):
        threaded = database.ThreadedDatabase(self.db, reactor)
        threaded.start()
        self.addCleanup(threaded.stop)
        tally = Tally(threaded, self.clock)
        caps = dataclasses.replace(self.caps, per_account_hour=100, per_mailbox_day=100, per_account_day=40)
        results = yield defer.gatherResults([
            tally.check_and_record("m%d@example.com" % (i % 7), 1, caps, NOON)
            for i in range(60)
        ])
        self.assertEqual(sum(1 for denial, _ in results if denial is None), 40)
        counts = yield threaded.run(counters.counts, "m0@example.com", 1, NOON)
        self.assertEqual(counts.account_day, 40)

    @defer.inlineCallbacks
    def test_counts_still_queued_at_stop_are_written(self):
        threaded = database.ThreadedDatabase(database.connect(self.path), reactor)
        threaded.start()
        tally = Tally(threaded, self.clock)
        yield tally.check_and_record("a@example.com", 1, self.caps, NOON)
        busy, release = threading.Event(), threading.Event()

        def hold(db):
            busy.set()
            release.wait(10)

        threaded.run(hold)
        yield threads.deferToThread(busy.wait, 10)
        self.assertTrue(busy.is_set())
        tally.check_and_record("a@example.com", 1, self.caps, NOON)
        release.set()
        threaded.stop()
        self.assertEqual(counters.counts(self.db, "a@example.com", 1, NOON), limits.Counts(2, 2, 2))

    def test_failed_load_fails_every_waiting_check(self):
        self.db.execute("DROP TABLE send_recent")
        failures = []
        for _ in range(2):
            self.tally.check_and_record("a@example.com", 1, self.caps, NOON).addErrback(failures.append)
        self.assertEqual(len(failures), 2)
