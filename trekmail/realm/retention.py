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


def _move_all(moves):
    """
    Rename each C{(source, target)}; on a failure the ones done are moved
    back, so the caller's rolled-back transaction and the disk agree.
    """
    done = []
    try:
        for source, target in moves:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(source, target)
            done.append((source, target))
    except OSError:
        for source, target in reversed(done):
            os.rename(target, source)
        raise


def _prune(path, stop):
    """Remove the empty directories from C{path} up to (not including) C{stop}: a domain's C{mail/DOMAIN/}."""
    while os.path.abspath(path) != os.path.abspath(stop):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)


def set_aside(data_dir, address, now):
    """
    Move the mailbox's Maildir and DAV data under L{deleted_dir}; the
    directory it went to, or C{None} when the mailbox had nothing on disk.
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
    _move_all([(path, os.path.join(target, name)) for name, path in present])
    _prune(os.path.dirname(maildir_path(data_dir, address)), data_dir)
    return target


def move_mailbox(data_dir, old, new):
    """A renamed mailbox's Maildir and DAV data follow it; refused if the new address already has either."""
    moves = []
    for (_, source), (_, target) in zip(_parts(data_dir, old), _parts(data_dir, new)):
        if os.path.lexists(target):
            raise InvalidInput("%s already exists on disk: move it away first" % (target,))
        if os.path.lexists(source):
            moves.append((source, target))
    _move_all(moves)
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
