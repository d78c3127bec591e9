"""
Failed-login throttling per client address, one for every protocol of
the server (L{trekmail.policy.logins}) so that opening parallel
connections, or trying another protocol, buys an attacker nothing.

An attempt counts toward its failure's delay from the moment it starts
(L{attempted}): forty wrong guesses sent at once wait as long as forty
sent one after another.  Only attempts that did fail (L{failed}) count
toward refusing the address: twenty people behind one office NAT or a
webmail front end logging in at the same moment must not lock each
other out.  How many run at once is capped by the caller
(L{trekmail.policy.logins.LoginGuard}'s C{in_progress}).

Each failure within C{window} seconds of the previous one raises the
address's count: the first C{free} failures answer at once (people
mistype), later ones wait C{base_delay * 2**k} seconds (capped at
C{max_delay}) before the reply, and from C{disconnect_after} failures on
the address is refused outright until it has been quiet for C{window}
seconds.  The delay is applied by the protocol with a timer, never by
blocking, so other clients are not slowed.  A success does not clear the
count: one valid login must not reopen a brute force on other mailboxes.

Pure state and arithmetic; the caller passes the time in.
"""

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int
    last: float
    running: int = 0
    """Attempts started and not yet over."""


@dataclass(frozen=True)
class Verdict:
    delay: float
    """Seconds to hold the failure reply."""
    disconnect: bool
    """Close the connection after replying."""


class AuthThrottle:
    def __init__(self, free=3, base_delay=1.0, max_delay=8.0, disconnect_after=10,
                 window=900.0, max_tracked=100000):
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.disconnect_after = disconnect_after
        self.window = window
        self.max_tracked = max_tracked
        self._records = OrderedDict()

    def _current(self, address, now):
        record = self._records.get(address)
        if record is not None and now - record.last >= self.window:
            del self._records[address]
            return None
        return record

    def blocked(self, address, now):
        """Whether C{address} has failed too often to try again yet."""
        record = self._current(address, now)
        return record is not None and record.failures >= self.disconnect_after

    def _record(self, address, now):
        record = self._current(address, now)
        if record is None:
            record = self._records[address] = _Record(0, now)
        record.last = now
        self._records.move_to_end(address)
        while len(self._records) > self.max_tracked:
            self._records.popitem(last=False)
        return record

    def block(self, address, now):
        """Refuse C{address} from now on, as if it had failed C{disconnect_after} times (another process's verdict)."""
        record = self._record(address, now)
        record.failures = max(record.failures, self.disconnect_after)

    def attempted(self, address, now):
        """A login from C{address} starts now: the L{Verdict} to apply if it fails."""
        record = self._record(address, now)
        record.running += 1
        count = record.failures + record.running
        excess = count - self.free
        delay = 0.0 if excess <= 0 else min(self.max_delay, self.base_delay * 2 ** (excess - 1))
        return Verdict(delay, count >= self.disconnect_after)

    def _over(self, address, now):
        record = self._current(address, now)
        if record is not None and record.running > 0:
            record.running -= 1
        return record

    def failed(self, address, now):
        """The login counted by L{attempted} failed: it counts toward refusing the address."""
        record = self._over(address, now) or self._record(address, now)
        record.failures += 1
        record.last = now

    def succeeded(self, address, now):
        """The login counted by L{attempted} succeeded (or was never checked): it counts for nothing."""
        self._over(address, now)
