"""
The one guard every login of the server passes, whatever the protocol
(SMTP AUTH, IMAP LOGIN/AUTHENTICATE, DAV Basic): it wraps the cred
portal or checker so that the failed-login rule (L{AuthThrottle}) holds
for parallel attempts and across protocols.

An attempt is counted before its check runs, and at most C{in_progress}
checks of one client address run at a time; the others are refused at
once with L{Busy} (each protocol's temporary failure), so a client
cannot queue forty password hashes by sending forty logins together.
The same holds for all addresses together (C{total}): many addresses
at once find the hashing threads busy, not an unbounded queue of
hashes in front of them.

Policy only: the protocols map L{Throttled}, L{Busy} and L{Failed} to
their replies.
"""

from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from twisted.python.failure import Failure

from trekmail.policy.throttle import AuthThrottle


class Throttled(Exception):
    """Too many failed logins from this client address lately: refuse, and close the connection."""


class Busy(Exception):
    """Too many logins from this client address are being checked right now: try again shortly."""


class Failed(UnauthorizedLogin):
    """The credentials were refused; C{verdict} (a L{trekmail.policy.throttle.Verdict}) says how to answer."""

    def __init__(self, verdict):
        super().__init__()
        self.verdict = verdict


class LoginGuard:
    """
    @param clock: gives the time the throttle counts in.
    @param in_progress: checks of one client address allowed at once.
    @param total: checks allowed at once, all addresses together.
    """

    def __init__(self, clock, throttle=None, in_progress=10, total=64):
        self.clock = clock
        self.throttle = AuthThrottle() if throttle is None else throttle
        self.in_progress = in_progress
        self.total = total
        self._running = {}
        self._running_total = 0

    def blocked(self, client):
        """Whether C{client} has failed too often to be let try (a protocol may refuse before asking for credentials)."""
        return self.throttle.blocked(client, self.clock.seconds())

    def start(self, client):
        """
        Counts an attempt of C{client} as failed until it succeeds: the
        L{Verdict} for its failure (may be a Deferred, for a guard asking
        another process).

        @raise Throttled: C{client} is blocked.
        @raise Busy: C{client} has C{in_progress} checks running, or
            C{total} checks of all clients are.
        """
        now = self.clock.seconds()
        if self.throttle.blocked(client, now):
            raise Throttled()
        running = self._running.get(client, 0)
        if running >= self.in_progress or self._running_total >= self.total:
            raise Busy()
        self._running[client] = running + 1
        self._running_total += 1
        return self.throttle.attempted(client, now)

    def finish(self, client, failed):
        """The check started by L{start} is over; only a refusal counts (an outage is no wrong password)."""
        running = self._running.pop(client) - 1
        self._running_total -= 1
        if running:
            self._running[client] = running
        if failed:
            self.throttle.failed(client, self.clock.seconds())
        else:
            self.throttle.succeeded(client, self.clock.seconds())

    def login(self, client, check):
        """
        Runs C{check()} (a portal login or C{requestAvatarId}: a Deferred)
        for C{client} under the rule: a Deferred with its result, or
        failing with L{Throttled} or L{Busy} (C{check} never called),
        L{Failed} (the credentials were refused), or C{check}'s own error
        (a directory outage).
        """
        d = defer.maybeDeferred(self.start, client)

        def started(verdict):
            def ended(result):
                failed = isinstance(result, Failure) and result.check(UnauthorizedLogin, UnhandledCredentials)
                self.finish(client, bool(failed))
                if failed:
                    raise Failed(verdict)
                return result
            return defer.maybeDeferred(check).addBoth(ended)

        return d.addCallback(started)
