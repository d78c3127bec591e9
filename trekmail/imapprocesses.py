"""
The other IMAP processes of C{[imap] processes}.  The first process
starts them, passes each one end of an AMP socketpair (see
L{trekmail.imap.cluster}) over which it then places connections, writes their log events
into its own log, and starts another when one dies.  Each runs
L{trekmail.imapchild}, a module of its own so that this one, which the
wiring imports, does not import the wiring back.

Processes rather than threads because one Python process uses one core
(imaptest's C{logout=0} profile kept one at 100 % while Dovecot's
processes used both).
"""

import os
import socket
import sys

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import Logger, eventFromJSON, globalLogPublisher

CHILD_MODULE = "trekmail.imapchild"
LINK_DESCRIPTOR = 3
"""The descriptor the child finds its end of the socketpair on."""
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 30.0
"""A process that ran this long before dying is restarted at once; one dying sooner waits longer each time."""
STOP_TIMEOUT = 10.0


class IMAPProcesses(service.Service):
    log = Logger()

    def __init__(self, config_path, reactor, coordinator):
        self.config_path = config_path
        """The configuration file each child reads for itself (L{trekmail.imapchild})."""
        self.reactor = reactor
        self.coordinator = coordinator
        self.children = {}
        self.delays = {}

    def startService(self):
        super().startService()
        for index in range(1, self.coordinator.size):
            self._spawn(index)

    def _spawn(self, index):
        if not self.running:
            return
        ours, theirs = socket.socketpair()
        descriptors = {0: "w", 1: "r", 2: "r", LINK_DESCRIPTOR: theirs.fileno()}
        args = [sys.executable, "-m", CHILD_MODULE, os.path.abspath(self.config_path),
                str(index)]
        child = _Child(self, index)
        try:
            self.reactor.spawnProcess(child, sys.executable, args, env=os.environ.copy(), childFDs=descriptors)
            self.reactor.adoptStreamConnection(
                ours.fileno(), socket.AF_UNIX,
                protocol.Factory.forProtocol(lambda: self.coordinator.link(index)))
        finally:
            ours.close()
            theirs.close()
        self.children[index] = child
        self.log.info("IMAP process {index} started (pid {pid})", index=index, pid=child.transport.pid)

    def ended(self, child, reason):
        if self.children.get(child.index) is child:
            del self.children[child.index]
        self.coordinator.ended(child.index)
        if not self.running:
            return
        delay = self.delays.get(child.index, 0.0)
        if self.reactor.seconds() - child.started < STABLE_AFTER:
            delay = min(MAX_RESTART_DELAY, max(FIRST_RESTART_DELAY, delay * 2))
        else:
            delay = 0.0
        self.delays[child.index] = delay
        self.log.error("IMAP process {index} ended ({reason}); another starts in {delay} s",
                       index=child.index, reason=reason.getErrorMessage(), delay=delay)
        self.reactor.callLater(delay, self._spawn, child.index)

    def signal_children(self, name):
        """
        Send every running child the signal C{name}: C{"HUP"} reloads the
        certificates, C{signal.SIGUSR2} (a number: Twisted names only HUP,
        STOP, INT, KILL and TERM) re-checks the open mailboxes.
        """
        for child in list(self.children.values()):
            child.signal(name)

    def stopService(self):
        super().stopService()
        children = list(self.children.values())
        for child in children:
            child.signal("TERM")
        killer = self.reactor.callLater(STOP_TIMEOUT, lambda: [c.signal("KILL") for c in children])
        done = defer.gatherResults([c.finished for c in children])
        return done.addBoth(lambda _: killer.active() and killer.cancel())


class _Child(protocol.ProcessProtocol):
    """One other IMAP process: its JSON log events on stdout join ours; stray stderr lines are logged as errors."""

    log = Logger()

    def __init__(self, processes, index):
        self.processes = processes
        self.index = index
        self.started = processes.reactor.seconds()
        self.finished = defer.Deferred()
        self.lines = {1: b"", 2: b""}

    def signal(self, name):
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def childDataReceived(self, fd, data):
        lines = (self.lines.get(fd, b"") + data).split(b"\n")
        self.lines[fd] = lines.pop()
        for line in lines:
            self._line(fd, line)

    def _line(self, fd, line):
        text = line.decode("utf-8", "replace").strip("\x1e").strip()
        if not text:
            return
        if fd == 1:
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if isinstance(event, dict):
                event["log_system"] = "imap-%d" % self.index
                globalLogPublisher(event)
                return
        self.log.error("IMAP process {index}: {line}", index=self.index, line=text)

    def processEnded(self, reason):
        self.processes.ended(self, reason)
        self.finished.callback(None)
