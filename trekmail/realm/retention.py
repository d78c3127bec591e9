"""
A deleted mailbox's data on disk: set aside, not removed, so that a
mistaken delete can be undone by hand until C{[realm]
deleted_mail_retention_days} have passed, after which the server's
L{RetentionPurge} removes it.

C{DATA_DIR/deleted/STAMP-ADDRESS/} holds the Maildir as C{mail/} and
the DAV principal as C{dav/}; C{STAMP} is the deletion time, UTC, as
C{YYYYMMDDTHHMMSSZ}, which the purge reads back (not the directory's
mtime, which a copy or a restore would change).

Moves are C{os.rename} within the data directory: atomic, and cheap
however large the Maildir.  A rename of a mailbox moves its data the same
way (L{move_mailbox}).
"""

import datetime
import os
import shutil

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from trekmail.mailstore import dav_principal_path, maildir_path
from trekmail.realm.errors import InvalidInput

DELETED = "deleted"
STAMP = "%Y%m%dT%H%M%SZ"
PURGE_EVERY = 3600
"""Seconds between two purges: retention is counted in days."""

log = Logger()


def deleted_dir(data_dir):
    return os.path.join(data_dir, DELETED)


def _parts(data_dir, address):
    """The mailbox's data on disk, each with its name inside a set-aside directory."""
    return (("mail", maildir_path(data_dir, address)), ("dav", dav_principal_path(data_dir, address)))


class Moves:
    """
    Every rename one verb has done.  C{with Moves() as moves,
    transaction(db):} puts them all back, newest first, when anything in
    the verb fails (a later mailbox's move, a statement, the commit): a
    domain's or account's delete moves many mailboxes, and one whose rows
    roll back must not leave its mail under L{deleted_dir}, where the
    purge would remove it.
    """

    def __init__(self):
        self.done = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.undo()
        return False

    def move(self, source, target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(source, target)
        self.done.append((source, target))

    def undo(self):
        """Each move back on its own: one that fails is logged with both paths and the others still go back."""
        done, self.done = self.done, []
        for source, target in reversed(done):
            try:
                os.makedirs(os.path.dirname(source), exist_ok=True)
                os.rename(target, source)
            except OSError:
                log.failure("could not move {target} back to {source}: move it by hand",
                            target=target, source=source)


def _prune(path, stop):
    """Remove the empty directories from C{path} up to (not including) C{stop}: a domain's C{mail/DOMAIN/}."""
    while os.path.abspath(path) != os.path.abspath(stop):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)


def set_aside(data_dir, address, now, moves):
    """
    Move the mailbox's Maildir and DAV data under L{deleted_dir}, through
    C{moves} (a L{Moves}); the directory it went to, or C{None} when the
    mailbox had nothing on disk.
    """
    present = [(name, path) for name, path in _parts(data_dir, address) if os.path.lexists(path)]
    if not present:
        return None
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(STAMP)
    base = os.path.join(deleted_dir(data_dir), "%s-%s" % (stamp, address))
    target, n = base, 1
    while os.path.lexists(target):
        n += 1
        target = "%s.%d" % (base, n)
    for name, path in present:
        moves.move(path, os.path.join(target, name))
    _prune(os.path.dirname(maildir_path(data_dir, address)), data_dir)
    return target


def refuse_data_on_disk(data_dir, address):
    """
    Refused if C{address} already has a Maildir or DAV data: a mailbox
    added or renamed there would inherit it (mail written by a delivery
    still in flight when the previous mailbox was deleted, or a copy put
    back by hand), and only the operator knows whose it is.
    """
    for _, path in _parts(data_dir, address):
        if os.path.lexists(path):
            raise InvalidInput("%s already exists on disk: move it away first" % (path,))


def move_mailbox(data_dir, old, new, moves):
    """A renamed mailbox's Maildir and DAV data follow it, through C{moves} (a L{Moves})."""
    refuse_data_on_disk(data_dir, new)
    for (_, source), (_, target) in zip(_parts(data_dir, old), _parts(data_dir, new)):
        if os.path.lexists(source):
            moves.move(source, target)
    _prune(os.path.dirname(maildir_path(data_dir, old)), data_dir)


def deleted_at(name):
    """The deletion time of a set-aside directory's C{name}, or C{None} if it is not one of ours."""
    try:
        stamp = datetime.datetime.strptime(name.partition("-")[0], STAMP)
    except ValueError:
        return None
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def purge(data_dir, now, retention_seconds):
    """Remove the set-aside data deleted C{retention_seconds} or more before C{now}; the names removed."""
    try:
        names = sorted(os.listdir(deleted_dir(data_dir)))
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        when = deleted_at(name)
        if when is not None and now - when >= retention_seconds:
            shutil.rmtree(os.path.join(deleted_dir(data_dir), name))
            removed.append(name)
    return removed


class RetentionPurge(service.Service):
    """
    Runs L{purge} every L{PURGE_EVERY} seconds of C{clock}, and once at
    start.  C{run(function, *args)} (a L{trekmail.workerthreads.WorkerThreads}'s, in the server)
    returns a Deferred: removing a large Maildir must not hold the reactor.
    """

    def __init__(self, data_dir, retention_days, clock, run):
        self.data_dir = data_dir
        self.retention_seconds = retention_days * 86400
        self.clock = clock
        self.run = run
        self._loop = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.purge)
        self._loop.clock = self.clock
        self._loop.start(PURGE_EVERY, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def purge(self):
        d = self.run(purge, self.data_dir, self.clock.seconds(), self.retention_seconds)
        d.addCallback(self._purged)
        d.addErrback(lambda f: log.failure("purging deleted mailboxes failed", f))
        return d

    @staticmethod
    def _purged(removed):
        for name in removed:
            log.info("purged deleted mailbox data {name} (retention over)", name=name)
