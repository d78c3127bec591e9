"""
The sending counts of the mailboxes and accounts sending now, held on the
reactor thread, with sqlite (L{trekmail.policy.counters}) written behind.

Why not decide in sqlite: counting a message there took a trip to the
database thread and back between the end of DATA and the C{250}, and
under load that trip was the larger half of the wait (p50 5.6 ms of
12.8 in C{bench/smtp.py}), though the statements took 66 us.  Here the
check is a few dictionary look-ups.  It stays atomic because only the
reactor thread touches these counts, so concurrent sessions still cannot
both take the last slot.  Every change is queued to the database thread
in order, behind the reply: a restart loads the counts back, and a crash
forgets at most the changes still in that queue.

A mailbox or account is loaded from sqlite the first time it sends (one
trip, shared by sessions that arrive meanwhile) and forgotten after an
hour without sending, which the database then remembers for it.
"""

from collections import deque

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from trekmail.policy import counters
from trekmail.policy.limits import HOUR, Counts, day_number, over_limit

log = Logger()


class _Daily:
    def __init__(self, day, count):
        self.day = day
        self.count = count
        self.used = 0.0

    def today(self, day):
        if self.day != day:
            self.day, self.count = day, 0
        return self.count


class _Account(_Daily):
    def __init__(self, day, count, recent):
        super().__init__(day, count)
        self.recent = deque([second, n] for second, n in recent)
        self.hour = sum(n for _, n in recent)

    def last_hour(self, second):
        while self.recent and self.recent[0][0] <= second - HOUR:
            self.hour -= self.recent.popleft()[1]
        return self.hour

    def add_second(self, second, delta):
        """Count C{delta} at C{second}: the newest second, or (taking one back) any still in the hour."""
        for entry in reversed(self.recent):
            if entry[0] == second:
                entry[1] += delta
                self.hour += delta
                return
            if entry[0] < second:
                break
        if delta > 0:
            self.recent.append([second, delta])
            self.hour += delta


class Tally:
    """
    @param database: the L{trekmail.realm.database.ThreadedDatabase}.
    @param clock: what C{seconds()} the idle ones are forgotten by.
    """

    def __init__(self, database, clock):
        self._database = database
        self._clock = clock
        self._mailboxes = {}
        self._accounts = {}
        self._loading = {}
        self._swept_at = clock.seconds()

    def counts(self, mailbox, account_id, now):
        """Deferred firing with the L{Counts} of C{mailbox} and its account at C{now}."""
        mailbox = mailbox.lower()
        return self._loaded(mailbox, account_id, now).addCallback(lambda _: self._counts(mailbox, account_id, now))

    def check_and_record(self, mailbox, account_id, caps, now):
        """
        Deferred firing with C{(denial, receipt)}: a L{Denial} and C{None}
        when a cap is full, else C{None} and the L{counters.Receipt} of the
        message just counted.
        """
        mailbox = mailbox.lower()
        return self._loaded(mailbox, account_id, now).addCallback(
            lambda _: self._check_and_record(mailbox, account_id, caps, now)
        )

    def release(self, receipt):
        """Take back a message counted by L{check_and_record} that was not accepted after all."""
        self._change(receipt, -1)

    def _counts(self, mailbox, account_id, now):
        day = day_number(now)
        account = self._accounts[account_id]
        return Counts(
            mailbox_day=self._mailboxes[mailbox].today(day),
            account_day=account.today(day),
            account_hour=account.last_hour(int(now)),
        )

    def _check_and_record(self, mailbox, account_id, caps, now):
        denial = over_limit(caps, self._counts(mailbox, account_id, now))
        if denial is not None:
            return denial, None
        receipt = counters.Receipt(mailbox, account_id, day_number(now), int(now))
        self._change(receipt, 1)
        return None, receipt

    def _change(self, receipt, delta):
        now = self._clock.seconds()
        mailbox = self._mailboxes.get(receipt.mailbox)
        if mailbox is not None and mailbox.day == receipt.day:
            mailbox.count += delta
            mailbox.used = now
        account = self._accounts.get(receipt.account_id)
        if account is not None:
            if account.day == receipt.day:
                account.count += delta
            account.add_second(receipt.second, delta)
            account.used = now
        self._database.run(counters.record, receipt, delta).addErrback(
            lambda failure: log.failure("sending count of {mailbox} not saved", failure, mailbox=receipt.mailbox)
        )
        self._forget_idle(now)

    def _loaded(self, mailbox, account_id, now):
        if mailbox in self._mailboxes and account_id in self._accounts:
            return succeed(None)
        key = (mailbox, account_id)
        d = Deferred()
        if key in self._loading:
            self._loading[key].append(d)
        else:
            self._loading[key] = [d]
            self._database.run(counters.load, mailbox, account_id, now).addBoth(self._arrived, key, now)
        return d

    def _arrived(self, result, key, now):
        waiting = self._loading.pop(key)
        if not isinstance(result, tuple):
            for d in waiting:
                d.errback(result)
            return
        mailbox, account_id = key
        mailbox_day, account_day, recent = result
        day = day_number(now)
        self._mailboxes.setdefault(mailbox, _Daily(day, mailbox_day)).used = now
        self._accounts.setdefault(account_id, _Account(day, account_day, recent)).used = now
        for d in waiting:
            d.callback(None)

    def _forget_idle(self, now):
        if now - self._swept_at < HOUR / 6:
            return
        self._swept_at = now
        for held in (self._mailboxes, self._accounts):
            for key in [k for k, v in held.items() if v.used < now - HOUR]:
                del held[key]
