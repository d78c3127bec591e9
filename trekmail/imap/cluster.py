"""
IMAP served by several processes (C{[imap] processes}), each accepting on
the same listening sockets.

A L{trekmail.imap.store.Folder} is the authority for its folder only
within one process, so every session of one mailbox must live in the
same process: its I{owner}, picked by hashing the address.  A session
that logs in on another process is handed to the owner, the way
Dovecot's imap-login hands a client to an imap process.  A plain
connection moves whole: its socket crosses on a UNIX socket
(C{SCM_RIGHTS}) with the bytes already read.  A TLS connection cannot (its
keys live in this process's OpenSSL), so it is I{spliced}: this process
keeps the TLS side and passes plaintext both ways through a socketpair
whose other end the owner serves.

The first process coordinates: it holds the per-account connection caps
for all (L{ConnectionLimits.admit}) and counts every process's failed
logins (L{AuthThrottle}; the others also remember locally which addresses
it has refused), and the others reach it, and each other through it, over AMP on a socketpair made when it spawned them, so
no one else can connect.  The caps of a process that dies are released
when its link closes.
"""

import json
import os
import socket
import zlib
from dataclasses import dataclass, replace

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols import amp

from trekmail.plans import plan_named
from trekmail.policy.throttle import AuthThrottle, Verdict

_log = Logger()

MAX_CARRIED = 60000
"""Bytes already read that may ride along in the hand-off message (AMP values stop at 64 KiB); more goes through a splice."""


@dataclass(frozen=True)
class Handoff:
    """A logged-in session on its way to the process that owns its mailbox."""

    owner: int
    admission: int
    tag: str
    address: str
    peer: str
    tls: bool
    pending: bytes


class Unavailable(Exception):
    """The owning process cannot take the session now (it is restarting)."""


class Adopt(amp.Command):
    arguments = [
        (b"descriptor", amp.Descriptor()), (b"family", amp.Integer()), (b"owner", amp.Integer()),
        (b"admission", amp.Integer()), (b"tag", amp.Unicode()), (b"address", amp.Unicode()),
        (b"peer", amp.Unicode()), (b"tls", amp.Boolean()), (b"pending", amp.String()),
        (b"inode", amp.Integer()),
    ]
    response = []
    errors = {Unavailable: b"UNAVAILABLE"}


class Admit(amp.Command):
    arguments = [(b"account", amp.Unicode()), (b"peer", amp.Unicode()), (b"plan", amp.Unicode()),
                 (b"holder", amp.Integer())]
    response = [(b"admission", amp.Integer())]


class LoginFailed(amp.Command):
    arguments = [(b"peer", amp.Unicode()), (b"now", amp.Float())]
    response = [(b"delay", amp.Float()), (b"disconnect", amp.Boolean())]


class Dismiss(amp.Command):
    arguments = [(b"admission", amp.Integer())]
    requiresAnswer = False


def _arguments(handoff, descriptor, family):
    fields = dict(vars(handoff))
    fields.update(descriptor=descriptor, family=family, inode=os.fstat(descriptor).st_ino)
    return fields


def _received(link, fields):
    """
    The descriptor of an L{Adopt}, checked against the socket the sender
    meant: if the kernel ever dropped one in transit, AMP would pair each
    later message with the wrong socket, and a session could be handed
    someone else's connection.  The link is closed instead (the other
    process then restarts and the pairing starts afresh).
    """
    descriptor = fields["descriptor"]
    if os.fstat(descriptor).st_ino != fields["inode"]:
        os.close(descriptor)
        _log.critical("IMAP hand-off received the wrong socket; closing the link to resynchronise")
        link.transport.loseConnection()
        raise Unavailable()
    return _handoff(fields), descriptor, fields["family"]


def _handoff(fields):
    return Handoff(**{name: fields[name] for name in Handoff.__dataclass_fields__})


def _flushed(transport):
    """
    Whether a TCP transport has written everything it was given: only then
    may its socket change hands without reordering replies.  Twisted keeps
    no public count of unwritten bytes, hence the private attributes.
    """
    unwritten = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return unwritten <= 0 and not getattr(transport, "_tempDataLen", 0)


class Splice(protocol.Protocol):
    """The owner's side of a spliced TLS session, as seen from the process that keeps the TLS."""

    def __init__(self, outer):
        self.outer = outer

    def connectionMade(self):
        self.outer.registerProducer(self.transport, True)
        self.transport.registerProducer(self.outer, True)

    def dataReceived(self, data):
        self.outer.write(data)

    def connectionLost(self, reason=None):
        self.outer.loseConnection()


class Solo:
    """
    One process serving IMAP: every mailbox is ours, and the caps are
    counted here.  The base of the several-process roles, which add how a
    session moves.
    """

    def __init__(self, limits, reactor=None, index=0, size=1):
        self.limits = limits
        self.throttle = AuthThrottle()
        self.reactor = reactor
        self.index = index
        self.size = size
        self.factory = None
        """The L{IMAPFactory} that adopted sessions join; set when the service is wired."""

    def owner_of(self, address):
        return zlib.crc32(address.encode("utf-8")) % self.size

    def admit(self, account_id, peer, plan, holder):
        """An admission number, or C{None} past the plan's caps (may be a Deferred)."""
        return self.limits.admit(account_id, peer, plan, holder)

    def dismiss(self, admission):
        self.limits.dismiss(admission)

    def blocked(self, peer, now):
        """Whether C{peer} has failed to log in too often to be let try."""
        return self.throttle.blocked(peer, now)

    def failed(self, peer, now):
        """Counts a failed login from C{peer}: the L{Verdict} (may be a Deferred)."""
        return self.throttle.failed(peer, now)

    def hand_off(self, session, handoff):
        """
        Sends C{session} (logged in, its input held) to C{handoff.owner}.
        Fires with the splice when the session stays here as a TLS relay
        (what it has read but not parsed is for the caller to pass on), or
        C{None} when its socket has left with C{handoff.pending}; fails,
        the session untouched, when the owner cannot take it.
        """
        transport = session.transport
        if not handoff.tls and len(handoff.pending) <= MAX_CARRIED and _flushed(transport):
            return self._move(transport, handoff)
        return self._splice(transport, handoff)

    def _move(self, transport, handoff):
        transport.stopReading()
        descriptor = os.dup(transport.fileno())

        def gone(_):
            transport._shouldShutdown = False
            transport.loseConnection()

        def stayed(failure):
            transport.startReading()
            return failure

        d = self._deliver(handoff, descriptor, transport.socket.family)
        d.addBoth(self._closing, descriptor)
        return d.addCallbacks(gone, stayed)

    def _splice(self, transport, handoff):
        ours, theirs = socket.socketpair()

        def joined(_):
            splice = Splice(transport)
            self.reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, _One(splice))
            return splice

        d = self._deliver(replace(handoff, pending=b""), theirs.fileno(), socket.AF_UNIX)
        d.addBoth(self._closing, theirs)
        d.addCallback(joined)
        return d.addBoth(self._closing, ours)

    @staticmethod
    def _closing(result, descriptor):
        if isinstance(descriptor, int):
            os.close(descriptor)
        else:
            descriptor.close()
        return result

    def _deliver(self, handoff, descriptor, family):
        return defer.fail(Unavailable())

    def adopt(self, handoff, descriptor, family):
        """A session handed to us joins our IMAP factory (C{descriptor} stays the caller's to close)."""
        if self.limits.full():
            raise Unavailable()
        self.reactor.adoptStreamConnection(descriptor, family, self.factory.adoption(handoff))


class _One(protocol.Factory):
    def __init__(self, built):
        self.built = built

    def buildProtocol(self, addr):
        return self.built


class Coordinator(Solo):
    """The first process: counts everyone's caps and routes sessions to the other processes."""

    def __init__(self, limits, reactor, size):
        super().__init__(limits, reactor, 0, size)
        self.links = {}

    def link(self, index):
        """The AMP protocol to serve process C{index}'s end of its socketpair."""
        return CoordinatorLink(self, index)

    def joined(self, index, link):
        self.links[index] = link

    def left(self, index, link):
        if self.links.get(index) is link:
            del self.links[index]
        self.limits.dismiss_holder(index)

    def _deliver(self, handoff, descriptor, family):
        if handoff.owner == self.index:
            return defer.maybeDeferred(self.adopt, handoff, descriptor, family)
        link = self.links.get(handoff.owner)
        if link is None:
            return defer.fail(Unavailable())
        return link.callRemote(Adopt, **_arguments(handoff, descriptor, family))


class CoordinatorLink(amp.AMP):
    def __init__(self, coordinator, index):
        super().__init__()
        self.coordinator = coordinator
        self.index = index

    def connectionMade(self):
        super().connectionMade()
        self.coordinator.joined(self.index, self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.coordinator.left(self.index, self)

    @Admit.responder
    def admit(self, account, peer, plan, holder):
        admission = self.coordinator.admit(json.loads(account), peer, plan_named(plan), holder)
        return {"admission": admission or 0}

    @Dismiss.responder
    def dismiss(self, admission):
        self.coordinator.dismiss(admission)
        return {}

    @LoginFailed.responder
    def login_failed(self, peer, now):
        verdict = self.coordinator.failed(peer, now)
        return {"delay": verdict.delay, "disconnect": verdict.disconnect}

    @Adopt.responder
    def adopt(self, **fields):
        handoff, descriptor, family = _received(self, fields)
        d = self.coordinator._deliver(handoff, descriptor, family)
        return d.addBoth(self.coordinator._closing, descriptor).addCallback(lambda _: {})


class Member(Solo):
    """
    Any other process: asks the coordinator for admissions, and sends and
    receives sessions through it.
    """

    def __init__(self, limits, reactor, index, size, orphaned=lambda: None):
        super().__init__(limits, reactor, index, size)
        self.coordinator = None
        self.orphaned = orphaned
        """Called when the link to the coordinator closes: the first process is gone, and so is our reason to run."""

    def link(self):
        """The AMP protocol for this process's end of the socketpair."""
        return MemberLink(self)

    def admit(self, account_id, peer, plan, holder):
        if self.coordinator is None:
            return defer.fail(Unavailable())
        d = self.coordinator.callRemote(Admit, account=json.dumps(account_id), peer=peer, plan=plan.name,
                                        holder=holder)
        return d.addCallback(lambda answer: answer["admission"] or None)

    def dismiss(self, admission):
        if admission is not None and self.coordinator is not None:
            self.coordinator.callRemote(Dismiss, admission=admission)

    def failed(self, peer, now):
        if self.coordinator is None:
            return defer.fail(Unavailable())

        def verdict(answer):
            if answer["disconnect"]:
                self.throttle.block(peer, now)
            return Verdict(answer["delay"], answer["disconnect"])
        return self.coordinator.callRemote(LoginFailed, peer=peer, now=now).addCallback(verdict)

    def _deliver(self, handoff, descriptor, family):
        if self.coordinator is None:
            return defer.fail(Unavailable())
        return self.coordinator.callRemote(Adopt, **_arguments(handoff, descriptor, family))


class MemberLink(amp.AMP):
    def __init__(self, member):
        super().__init__()
        self.member = member

    def connectionMade(self):
        super().connectionMade()
        self.member.coordinator = self

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.member.coordinator = None
        self.member.orphaned()

    @Adopt.responder
    def adopt(self, **fields):
        handoff, descriptor, family = _received(self, fields)
        try:
            self.member.adopt(handoff, descriptor, family)
        finally:
            os.close(descriptor)
        return {}
