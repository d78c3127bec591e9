"""
The link between IMAP processes (L{trekmail.imap.cluster}): the AMP
commands they exchange over the socketpair made at spawn, the protocol at
each end (L{CoordinatorLink} in the first process, L{MemberLink} in the
others), and how a socket changes process: its descriptor crosses with
C{SCM_RIGHTS} and is checked on arrival (L{_received}), or a TLS session
stays and is relayed (L{Splice}).  What to ask and where a session goes
is the placement policy's, in L{trekmail.imap.cluster}.
"""

import json
import os
from dataclasses import dataclass

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols import amp

from trekmail.imap.clusterlogins import CountingLogins
from trekmail.plans import plan_named

_log = Logger()


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
    arguments = [(b"account", amp.Unicode()), (b"address", amp.Unicode()), (b"peer", amp.Unicode()),
                 (b"plan", amp.Unicode())]
    response = [(b"admission", amp.Integer()), (b"owner", amp.Integer())]


class Release(amp.Command):
    arguments = [(b"address", amp.Unicode())]
    requiresAnswer = False


class Place(amp.Command):
    arguments = [(b"descriptor", amp.Descriptor()), (b"family", amp.Integer()), (b"listener", amp.Unicode()),
                 (b"inode", amp.Integer())]
    response = []
    errors = {Unavailable: b"UNAVAILABLE"}


class Load(amp.Command):
    arguments = [(b"connections", amp.Integer())]
    requiresAnswer = False


class Dismiss(amp.Command):
    arguments = [(b"admission", amp.Integer())]
    requiresAnswer = False


def _arguments(descriptor, family, **fields):
    return dict(fields, descriptor=descriptor, family=family, inode=os.fstat(descriptor).st_ino)


def _received(link, fields):
    """
    The descriptor of an L{Adopt} or L{Place}, checked against the socket
    the sender meant: if the kernel ever dropped one in transit, AMP would
    pair each later message with the wrong socket, and a session could be
    handed someone else's connection.  The link is closed instead (the
    other process then restarts and the pairing starts afresh).
    """
    descriptor = fields["descriptor"]
    if os.fstat(descriptor).st_ino != fields["inode"]:
        os.close(descriptor)
        _log.critical("IMAP hand-off received the wrong socket; closing the link to resynchronise")
        link.transport.loseConnection()
        raise Unavailable()
    return descriptor


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


def _let_go(transport):
    """
    Closes our descriptor of a socket another process now serves: without
    the shutdown Twisted would send first, which would end the connection
    there too.  Twisted has no public switch for it.
    """
    transport._shouldShutdown = False
    transport.loseConnection()


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


class _One(protocol.Factory):
    def __init__(self, built):
        self.built = built

    def buildProtocol(self, addr):
        return self.built


class CoordinatorLink(CountingLogins, amp.AMP):
    def __init__(self, coordinator, index):
        super().__init__()
        self.coordinator = coordinator
        self.guard = coordinator.guard
        self.index = index

    def connectionMade(self):
        super().connectionMade()
        self.coordinator.joined(self.index, self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.coordinator.left(self.index, self)
        self.end_logins()

    @Admit.responder
    def admit(self, account, address, peer, plan):
        admission = self.coordinator.admit(json.loads(account), address, peer, plan_named(plan), self.index)
        if admission is None:
            return {"admission": 0, "owner": -1}
        return {"admission": admission.number, "owner": admission.owner}

    @Load.responder
    def load(self, connections):
        if self.coordinator.links.get(self.index) is self:
            self.coordinator.loads[self.index] = connections
        return {}

    @Release.responder
    def release(self, address):
        self.coordinator.leases.release(address, self.index)
        return {}

    @Dismiss.responder
    def dismiss(self, admission):
        self.coordinator.dismiss(admission)
        return {}

    @Adopt.responder
    def adopt(self, **fields):
        descriptor = _received(self, fields)
        d = self.coordinator._deliver(_handoff(fields), descriptor, fields["family"])
        return d.addBoth(self.coordinator._closing, descriptor).addCallback(lambda _: {})


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
        descriptor = _received(self, fields)
        try:
            self.member.adopt(_handoff(fields), descriptor, fields["family"])
        finally:
            os.close(descriptor)
        return {}

    @Place.responder
    def place(self, listener, family, **fields):
        descriptor = _received(self, fields)
        try:
            self.member.placed(listener, descriptor, family)
        finally:
            os.close(descriptor)
        return {}
