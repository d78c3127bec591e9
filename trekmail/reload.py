"""
Signals a running server acts on.  SIGHUP reloads the certificates, as
it makes Postfix and Dovecot re-read theirs (twistd keeps SIGUSR1 for
its log): here, and passed on to the other IMAP processes, which serve
connections of their own.  An ACME renewal installs its pair through the
same L{Reload.reload}.  SIGUSR2 tells another IMAP process that the
admin API has just deleted or renamed mailboxes (L{OnSignal} on
L{trekmail.imap.sessions.MailboxRecheck.check}).
"""

import signal

from twisted.application import service


class OnSignal(service.Service):
    """Runs C{action} on the reactor thread each time the process receives C{signum}, while running."""

    def __init__(self, reactor, signum, action):
        self.reactor = reactor
        self.signum = signum
        self.action = action
        self._previous = None

    def startService(self):
        super().startService()
        self._previous = signal.signal(self.signum, self._caught)

    def stopService(self):
        signal.signal(self.signum, signal.SIG_DFL if self._previous is None else self._previous)
        return super().stopService()

    def _caught(self, signum, frame):
        # A signal handler runs between any two bytecodes: only hand the work to the reactor.
        self.reactor.callFromThread(self.action)


class Reload(OnSignal):
    """
    @param identity: the process's L{trekmail.tlsidentity.ServerIdentity}.
    @param processes: the L{trekmail.imapprocesses.IMAPProcesses} whose
        children reload when this process does (none in a child).
    """

    def __init__(self, reactor, identity, processes=()):
        super().__init__(reactor, signal.SIGHUP, self.reload)
        self.identity = identity
        self.processes = processes

    def reload(self):
        self.identity.reload()
        for processes in self.processes:
            processes.signal_children("HUP")
