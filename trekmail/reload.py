"""
SIGHUP reloads the certificates, as it makes Postfix and Dovecot re-read
theirs (twistd keeps SIGUSR1 for its log): here, and passed on to the
other IMAP processes, which serve connections of their own.  An ACME
renewal installs its pair through the same L{Reload.reload}.
"""

import signal

from twisted.application import service


class Reload(service.Service):
    """
    @param identity: the process's L{trekmail.tlsidentity.ServerIdentity}.
    @param processes: the L{trekmail.imapprocesses.IMAPProcesses} whose
        children reload when this process does (none in a child).
    """

    def __init__(self, reactor, identity, processes=()):
        self.reactor = reactor
        self.identity = identity
        self.processes = processes
        self._previous = None

    def startService(self):
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self):
        signal.signal(signal.SIGHUP, signal.SIG_DFL if self._previous is None else self._previous)
        return super().stopService()

    def _hangup(self, signum, frame):
        # A signal handler runs between any two bytecodes: only hand the work to the reactor.
        self.reactor.callFromThread(self.reload)

    def reload(self):
        self.identity.reload()
        for processes in self.processes:
            processes.signal_children("HUP")
