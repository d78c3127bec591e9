"""
Logins in a member IMAP process (L{trekmail.imap.cluster}) count in the
first process's L{LoginGuard}, the one SMTP and DAV use too: a member
asks it before each check (L{LoginStarted}) and tells it the outcome
(L{LoginEnded}), so an attempt is counted when it starts, whichever
process checks it.
"""

from twisted.protocols import amp

from trekmail.policy.logins import Busy, LoginGuard, Throttled
from trekmail.policy.throttle import Verdict


class LoginStarted(amp.Command):
    """A login from C{peer} is about to be checked (L{LoginGuard.start}): the verdict if it fails."""

    arguments = [(b"peer", amp.Unicode())]
    response = [(b"delay", amp.Float()), (b"disconnect", amp.Boolean())]
    errors = {Throttled: b"THROTTLED", Busy: b"BUSY"}


class LoginEnded(amp.Command):
    arguments = [(b"peer", amp.Unicode()), (b"failed", amp.Boolean())]
    requiresAnswer = False


class CountingLogins(amp.CommandLocator):
    """
    The first process's side, mixed into its link to each member (which
    sets C{guard}): a login still being checked when the link closes is
    ended as failed, so that the member's death never leaves its client
    address counted as busy.
    """

    guard = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._checking = []

    @LoginStarted.responder
    def login_started(self, peer):
        verdict = self.guard.start(peer)
        self._checking.append(peer)
        return {"delay": verdict.delay, "disconnect": verdict.disconnect}

    @LoginEnded.responder
    def login_ended(self, peer, failed):
        if peer in self._checking:
            self._checking.remove(peer)
            self.guard.finish(peer, failed)
        return {}

    def end_logins(self):
        while self._checking:
            self.guard.finish(self._checking.pop(), True)


class AskingCoordinator(LoginGuard):
    """
    A member's guard: the first process counts each login before it is
    checked here.  An address it refuses is also remembered in our own
    throttle and refused here without asking until its window passes.
    """

    def __init__(self, member, reactor):
        super().__init__(reactor)
        self.member = member

    def start(self, client):
        if self.blocked(client):
            raise Throttled()
        if self.member.coordinator is None:
            raise Busy()

        def refused(failure):
            if failure.check(Throttled):
                self.throttle.block(client, self.clock.seconds())
            return failure
        d = self.member.coordinator.callRemote(LoginStarted, peer=client)
        return d.addCallbacks(lambda answer: Verdict(answer["delay"], answer["disconnect"]), refused)

    def finish(self, client, failed):
        if self.member.coordinator is not None:
            self.member.coordinator.callRemote(LoginEnded, peer=client, failed=failed)
