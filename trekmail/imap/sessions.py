"""
The sessions of one IMAP process, and the re-check that ends those whose
mailbox no longer exists.

A pass asks the directory about each mailbox the process has open, one
lookup per mailbox however many sessions share it, and closes the
sessions of any that is gone with an untagged C{BYE} (RFC 3501, section
7.1.5).  A directory that cannot answer closes nothing: an outage must
not log everyone out.

A pass runs at once when the admin API (in the first process) has
deleted or renamed mailboxes, and in the other IMAP processes on the
SIGUSR2 the first sends them (L{trekmail.reload.OnSignal}).  The CLI is
a process of its own writing the realm's database, with nothing to tell
the server; nor is an LDAP directory's change told.  Those are caught by
the pass every L{RECHECK_INTERVAL} seconds: a deleted mailbox's sessions
outlive it by at most that long, plus one lookup per open mailbox.
"""

import weakref

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from trekmail.realm.errors import DirectoryUnavailable

RECHECK_INTERVAL = 5.0
"""Seconds between two passes: how long the sessions of a mailbox the CLI deleted may outlive it."""

GONE = b"* BYE This mailbox no longer exists\r\n"


class Sessions:
    """Every session a process's IMAP factories built; weakly held, so a closed one simply drops out."""

    def __init__(self):
        self._all = weakref.WeakSet()

    def track(self, session):
        self._all.add(session)
        return session

    def logged_in(self):
        """C{{address: [session, ...]}} of the sessions that have a mailbox open."""
        found = {}
        for session in list(self._all):
            if session.account is not None and session.state != "logout":
                found.setdefault(session.account.address, []).append(session)
        return found


class MailboxRecheck(service.Service):
    log = Logger()

    def __init__(self, sessions, directory, clock, interval=None):
        self.sessions = sessions
        self.directory = directory
        self.clock = clock
        self.interval = RECHECK_INTERVAL if interval is None else interval
        self._loop = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def check(self):
        """
        One pass.  It never fails: a failed C{LoopingCall} call stops the
        loop for good, and then no deleted mailbox's sessions would ever be
        closed again, so an error is logged and the check goes on with the
        next mailbox, or at worst the next pass.
        """
        try:
            for address in sorted(self.sessions.logged_in()):
                try:
                    context = yield self.directory.mailbox(address)
                except DirectoryUnavailable:
                    return
                except Exception:
                    self.log.failure("re-checking the IMAP mailbox {address} failed", address=address)
                    continue
                if context is None:
                    self.end(address)
        except Exception:
            self.log.failure("re-checking the open IMAP mailboxes failed; trying again in {interval} s",
                             interval=self.interval)

    def end(self, address):
        """Close every session still on C{address} (looked up again: some may have left during the lookup)."""
        sessions = self.sessions.logged_in().get(address, [])
        if sessions:
            self.log.info("closing {count} IMAP session(s) of {address}: the mailbox no longer exists",
                          count=len(sessions), address=address)
        for session in sessions:
            try:
                session._close(GONE)  # the server's own way out: BYE, release, close (L{trekmail.imap.server})
            except Exception:
                self.log.failure("closing an IMAP session of {address} failed", address=address)
