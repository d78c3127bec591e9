"""
The durable spool: every accepted message with its envelope, made durable
before the door answers C{250}.

An accepted message first goes into the accept log
(L{trekmail.queue.acceptlog}): a group-commit batch is appended to one
segment and made durable with one C{fdatasync}.  Mail still queued when
its segment has taken nothing for half a minute moves into a file of its
own under C{msg/}; that is where deferred mail waits, and all recovery
reads.

Why files and not sqlite: a message is written once and deleted once, and
a segment or file per message keeps the realm's single database thread
free for lookups.

The bytes and names on disk (entry format, directories, progress files)
are L{trekmail.queue.spoolformat}'s; this module decides when they are
written and read.
"""

import os

from twisted.logger import Logger

from trekmail.durable import discard, publish_batch, write_file
from trekmail.groupcommit import GroupCommit, each
from trekmail.queue import acceptlog
from trekmail.queue.interface import SpoolError
from trekmail.queue.spoolformat import TornEntry, decode, encode, read_envelope

log = Logger()


def _write_one(layout, queue_id, blob):
    """Write and fsync one entry under C{tmp/}; returns C{None} or the C{OSError}."""
    try:
        write_file(os.path.join(layout.tmp, queue_id), blob)
    except OSError as e:
        return e
    return None


def write_batch(layout, batch, syncers=None):
    """
    Runs on the writer thread: make every C{(queue_id, blob)} durable.
    Returns one C{None} or C{OSError} per entry, in order.

    With C{syncers} (a L{trekmail.workerthreads.WorkerThreads}), the files are written and fsynced in
    parallel: the filesystem journal then commits many of them together,
    where one thread would wait for one commit per file.  The batch's
    renames share one fsync of C{msg/}; if any of them fails, the whole
    batch is refused and taken back, as its callers are told.
    """
    if syncers is not None and len(batch) > 1:
        results = list(syncers.map(lambda item: _write_one(layout, *item), batch))
    else:
        results = [_write_one(layout, queue_id, blob) for queue_id, blob in batch]
    written = [(i, queue_id) for i, ((queue_id, _), error) in enumerate(zip(batch, results)) if error is None]
    published = publish_batch([(os.path.join(layout.tmp, queue_id), layout.message_path(queue_id))
                               for _, queue_id in written])
    error = next((e for e in published if e is not None), None)
    if error is not None:
        for index, queue_id in written:
            discard(os.path.join(layout.tmp, queue_id), layout.message_path(queue_id))
            results[index] = error
    return results


def accept_log(layout, clock, syncers=None):
    """
    The spool's L{acceptlog.AcceptLog}: what outlives a segment moves into
    C{msg/} files.  C{clock()} is the time in seconds (the reactor's).
    """
    return acceptlog.AcceptLog(
        layout.log, lambda batch: write_batch(layout, batch, syncers), layout.remove, layout.quarantine_bytes, clock
    )


class Spool:
    """
    The files of the queue.  C{store} is the only write that must be
    durable; everything else (reading, removing, quarantining, moving
    aged entries out of the accept log) runs on the shared worker pool.
    """

    def __init__(self, layout, reactor, workers, *, writer=None, syncers=None):
        self.layout = layout
        self._reactor = reactor
        self._workers = workers
        self.log = accept_log(layout, reactor.seconds, syncers)
        self._commit = GroupCommit(reactor, self.log.append, "trekmail-spool", writer)
        self._removals = GroupCommit(reactor, each(self._remove, OSError), "trekmail-spool", workers)

    def start(self):
        self.layout.create()
        self._commit.start()

    def stop(self):
        self._commit.stop()
        self.log.close()

    def store(self, queue_id, envelope, message):
        """Deferred firing with C{queue_id} once the entry is durable; fails with L{SpoolError}."""
        d = self._commit.submit((queue_id, encode(envelope, message)))

        def failed(failure):
            log.error("spool write of {queue_id} failed: {error}", queue_id=queue_id, error=failure.value)
            raise SpoolError(str(failure.value))

        d.addCallbacks(lambda _: queue_id, failed)
        return d

    def read(self, queue_id):
        """Deferred firing with C{(envelope, message)}; L{TornEntry} or C{FileNotFoundError}."""
        return self._run(self._read, queue_id)

    def _read(self, queue_id):
        located = self.log.locate(queue_id)
        if located is not None:
            try:
                blob = acceptlog.read_at(*located)
            except FileNotFoundError:
                pass
            else:
                try:
                    return decode(blob)
                except TornEntry as e:
                    self.layout.quarantine_bytes(queue_id, blob, str(e))
                    self.log.remove(queue_id)
                    raise
        path = self.layout.message_path(queue_id)
        with open(path, "rb") as f:
            blob = f.read()
        try:
            return decode(blob)
        except TornEntry as e:
            self.layout.quarantine_file(path, str(e))
            raise

    def remove(self, queue_id):
        """Delivered entries go to a worker thread together, not one hand-off each."""
        return self._removals.submit(queue_id)

    def _remove(self, queue_id):
        if self.log.remove(queue_id):
            self.layout.remove_state(queue_id)
        else:
            self.layout.remove(queue_id)

    def write_state(self, queue_id, state):
        return self._run(self._write_state, queue_id, state)

    def _write_state(self, queue_id, state):
        if self.log.locate(queue_id) is None:
            self.layout.write_state(queue_id, state)
        else:
            self.layout.replace_state(queue_id, state)

    def scan(self):
        """
        Deferred firing with C{(ids in the spool, whether a flush was
        requested)}; moves aged entries out of the accept log on the way.
        """
        return self._run(self._scan)

    def _scan(self):
        self.log.sweep()
        present = set(self.layout.file_ids()) | self.log.present()
        return present, self.layout.take_flush_request()

    def recover(self):
        """Deferred firing with C{[(queue_id, envelope, state)]} for every whole entry."""
        return self._run(recover, self.layout, self.log)

    def _run(self, function, *args):
        return self._workers.run(function, *args)


def recover(layout, accepted):
    """
    Runs at start-up, off the reactor: what the accept log holds moves
    into files (C{accepted} is the spool's L{accept_log}; the running
    spool's, so that a segment already taking new mail stays).  Files left in C{tmp/} never
    got a C{250} and torn files in C{msg/} cannot be delivered whole; both
    go to quarantine with a log line.
    """
    layout.create()
    for name in os.listdir(layout.tmp):
        path = os.path.join(layout.tmp, name)
        layout.quarantine_file(path, "unfinished write found at start-up")
        log.warn("quarantined unfinished spool write {name}", name=name)
    accepted.sweep()
    entries = []
    for queue_id in layout.file_ids():
        path = layout.message_path(queue_id)
        try:
            envelope = read_envelope(path)
        except (TornEntry, OSError) as e:
            layout.quarantine_file(path, str(e))
            log.error("quarantined torn spool entry {queue_id}: {why}", queue_id=queue_id, why=str(e))
            continue
        entries.append((queue_id, envelope, layout.read_state(queue_id)))
    return entries
