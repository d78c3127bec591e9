"""
IMAP served by several processes (C{[imap] processes}).

A L{trekmail.imap.store.Folder} is the authority for its folder only
within one process, so every session of one mailbox must live in the
same process: its I{owner}.  The owner is whichever process logged in
the mailbox's first session (L{Leases}), so a client usually stays where
the kernel handed it; a session that logs in on another process while
the mailbox is open elsewhere is handed to the owner, the way Dovecot's
imap-login hands a client to an imap process.  A plain
connection moves whole: its socket crosses on a UNIX socket
(C{SCM_RIGHTS}) with the bytes already read.  A TLS connection cannot (its
keys live in this process's OpenSSL), so it is I{spliced}: this process
keeps the TLS side and passes plaintext both ways through a socketpair
whose other end the owner serves.

Connections are accepted by the first process alone, which places each,
before a byte is read (so before any TLS handshake), with the process
serving fewest connections (L{Placing}): a burst of clients is shared out
evenly instead of landing wherever the kernel woke first, and a TLS
session starts where it will most likely be served.

The first process coordinates: it holds the per-account connection caps
for all (L{ConnectionLimits.admit}) and counts every process's logins in
its L{LoginGuard}, the one SMTP and DAV use too (L{clusterlogins}); the
others reach it, and each other through it, over AMP on a socketpair made
when it spawned them, so no one else can connect (L{trekmail.imap.clusterlink}).  The caps of a process
that dies are released when its link closes.
"""

import json
import os
import socket
from dataclasses import dataclass, replace

from twisted.internet import defer, protocol
from twisted.logger import Logger

from trekmail.imap.clusterlink import (Adopt, Admit, CoordinatorLink, Dismiss, Load, MemberLink, Place, Release,
                                       Splice, Unavailable, _arguments, _flushed, _let_go, _One)
from trekmail.imap.clusterlogins import AskingCoordinator
from trekmail.policy.logins import LoginGuard

_log = Logger()

MAX_CARRIED = 60000
"""Bytes already read that may ride along in the hand-off message (AMP values stop at 64 KiB); more goes through a splice."""


@dataclass(frozen=True)
class Admission:
    """A login let in under the plan's caps (C{number}, to give back), and the process that must serve it."""

    number: int
    owner: int


class Leases:
    """
    Which process has each mailbox open.  The first admission of a
    mailbox makes the process that asked its owner; the lease outlives
    the last session until the owner says it has written back its flags
    and closed the index (L{release}), so the next owner never loads a
    state older than the last one's.  A process that ends gives all its
    leases back (L{ended}).
    """

    def __init__(self):
        self._owners = {}
        self._held = {}

    def take(self, address, asking, number):
        """Counts admission C{number} against C{address}'s lease, made C{asking}'s if there is none: the owner."""
        lease = self._owners.get(address)
        if lease is None:
            lease = self._owners[address] = [asking, 0]
        lease[1] += 1
        self._held[number] = lease
        return lease[0]

    def owner(self, address, asking):
        lease = self._owners.get(address)
        return asking if lease is None else lease[0]

    def drop(self, number):
        lease = self._held.pop(number, None)
        if lease is not None:
            lease[1] -= 1

    def release(self, address, owner):
        """The owner has closed C{address}: the lease ends, unless a session is on its way to it again."""
        lease = self._owners.get(address)
        if lease is not None and lease[0] == owner and lease[1] <= 0:
            del self._owners[address]

    def ended(self, owner):
        for address in [a for a, lease in self._owners.items() if lease[0] == owner]:
            del self._owners[address]


class Solo:
    """
    One process serving IMAP: every mailbox is ours, and the caps are
    counted here.  The base of the several-process roles, which add how a
    session moves.
    """

    def __init__(self, limits, *, reactor=None, index=0, guard=None, serving=None):
        """
        C{serving(cluster)} builds what sessions arriving here join, given
        this cluster (which they ask at login): the L{IMAPFactory} that
        adopted sessions join, and by listener name the factory (TLS-wrapped
        for C{imaps}) that connections placed here join.
        """
        self.limits = limits
        self.guard = LoginGuard(reactor) if guard is None else guard
        """What every login passes (L{trekmail.policy.logins})."""
        self.leases = Leases()
        self.reactor = reactor
        self.index = index
        self.factory, self.doors = serving(self) if serving is not None else (None, {})

    def admit(self, account_id, address, peer, plan, asking=None):
        """
        The L{Admission} of a login to mailbox C{address} of account
        C{account_id} from C{peer}, asked by process C{asking} (this one
        by default), or C{None} past the plan's caps (may be a Deferred).
        """
        asking = self.index if asking is None else asking
        owner = self.leases.owner(address, asking)
        number = self.limits.admit(account_id, peer, plan, owner)
        if number is None:
            return None
        return Admission(number, self.leases.take(address, asking, number))

    def dismiss(self, admission):
        self.leases.drop(admission)
        self.limits.dismiss(admission)

    def released(self, address):
        """This process has closed mailbox C{address} (its flags are written back)."""
        self.leases.release(address, self.index)

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

        def stayed(failure):
            transport.startReading()
            return failure

        d = self._deliver(handoff, descriptor, transport.socket.family)
        d.addBoth(self._closing, descriptor)
        return d.addCallbacks(lambda _: _let_go(transport), stayed)

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

    def placed(self, listener, descriptor, family):
        """A connection accepted elsewhere on C{listener}, not yet read from, is ours to serve."""
        if self.limits.full() or listener not in self.doors:
            raise Unavailable()
        self.reactor.adoptStreamConnection(descriptor, family, self.doors[listener])


class Coordinator(Solo):
    """The first process: counts everyone's caps and routes sessions to the other processes."""

    def __init__(self, limits, *, reactor, size, guard=None, serving=None):
        self.size = size
        self.links = {}
        self.loads = {}
        """Each linked process's connections: as it last reported, plus those placed there since."""
        super().__init__(limits, reactor=reactor, index=0, guard=guard, serving=serving)

    def link(self, index):
        """The AMP protocol to serve process C{index}'s end of its socketpair."""
        return CoordinatorLink(self, index)

    def joined(self, index, link):
        self.links[index] = link
        self.loads[index] = 0

    def left(self, index, link):
        """
        Process C{index}'s link has closed: its caps go back at once, but
        its mailboxes stay its own (logins to them are refused) until it
        has ended, as it may still be writing them back.
        """
        if self.links.get(index) is link:
            del self.links[index]
            del self.loads[index]
        self.limits.dismiss_holder(index)

    def ended(self, index):
        self.leases.ended(index)

    def placement(self):
        """The process serving fewest connections: this one on a tie, as a placed connection costs a message."""
        best, fewest = self.index, self.limits.held()
        for index, load in self.loads.items():
            if load < fewest:
                best, fewest = index, load
        return best

    def place(self, index, transport, listener):
        """Sends a connection just accepted on C{listener} to process C{index}; fails if it cannot take it."""
        link = self.links.get(index)
        if link is None:
            return defer.fail(Unavailable())
        self.loads[index] += 1
        descriptor = os.dup(transport.fileno())
        d = link.callRemote(Place, **_arguments(descriptor, transport.socket.family, listener=listener))
        return d.addBoth(self._closing, descriptor)

    def _deliver(self, handoff, descriptor, family):
        if handoff.owner == self.index:
            return defer.maybeDeferred(self.adopt, handoff, descriptor, family)
        link = self.links.get(handoff.owner)
        if link is None:
            return defer.fail(Unavailable())
        return link.callRemote(Adopt, **_arguments(descriptor, family, **vars(handoff)))


class Member(Solo):
    """
    Any other process: asks the coordinator for admissions, and sends and
    receives sessions through it.
    """

    def __init__(self, limits, *, reactor, index, orphaned=lambda: None, serving=None):
        self.coordinator = None
        self._reporting = None
        limits.changed = self._connections_changed
        self.orphaned = orphaned
        """Called when the link to the coordinator closes: the first process is gone, and so is our reason to run."""
        super().__init__(limits, reactor=reactor, index=index, guard=AskingCoordinator(self, reactor),
                         serving=serving)

    def link(self):
        """The AMP protocol for this process's end of the socketpair."""
        return MemberLink(self)

    def admit(self, account_id, address, peer, plan):
        if self.coordinator is None:
            return defer.fail(Unavailable())
        d = self.coordinator.callRemote(Admit, account=json.dumps(account_id), address=address, peer=peer,
                                        plan=plan.name)
        return d.addCallback(lambda answer: Admission(answer["admission"], answer["owner"])
                             if answer["admission"] else None)

    def dismiss(self, admission):
        if admission is not None and self.coordinator is not None:
            self.coordinator.callRemote(Dismiss, admission=admission)

    def released(self, address):
        if self.coordinator is not None:
            self.coordinator.callRemote(Release, address=address)

    def _connections_changed(self):
        """Our count goes to the coordinator, which places new connections by it: once per turn of the reactor."""
        if self._reporting is None:
            self._reporting = self.reactor.callLater(0, self._report)

    def _report(self):
        self._reporting = None
        if self.coordinator is not None:
            self.coordinator.callRemote(Load, connections=self.limits.held())

    def _deliver(self, handoff, descriptor, family):
        if self.coordinator is None:
            return defer.fail(Unavailable())
        return self.coordinator.callRemote(Adopt, **_arguments(descriptor, family, **vars(handoff)))


class Placing(protocol.Factory):
    """
    An IMAP listener of the first process while there are others: each
    connection goes to L{Coordinator.placement} before a byte is read, or
    is served here (by C{served}, the listener's own factory) if that
    process cannot take it.
    """

    def __init__(self, coordinator, listener, served):
        self.coordinator = coordinator
        self.listener = listener
        self.served = served

    def doStart(self):
        self.served.doStart()

    def doStop(self):
        self.served.doStop()

    def buildProtocol(self, addr):
        target = self.coordinator.placement()
        if target == self.coordinator.index:
            return self.served.buildProtocol(addr)
        return _Placed(self, target, addr)


class _Placed(protocol.Protocol):
    """A connection on its way to another process; if it cannot go, it is served here after all."""

    def __init__(self, placing, target, addr):
        self.placing = placing
        self.target = target
        self.addr = addr

    def makeConnection(self, transport):
        self.transport = transport
        transport.stopReading()
        d = self.placing.coordinator.place(self.target, transport, self.placing.listener)
        d.addCallbacks(lambda _: _let_go(transport), self._stayed)

    def _stayed(self, failure):
        _log.info("IMAP connection stays here: process {index} could not take it ({error})",
                  index=self.target, error=failure.getErrorMessage())
        served = self.placing.served.buildProtocol(self.addr)
        if served is None:
            self.transport.loseConnection()
            return
        self.transport.protocol = served
        served.makeConnection(self.transport)
        self.transport.startReading()
