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

Entry format, in a segment record and in a file (all lengths decimal)::

    TREKQ1 <envelope length> <message length>\\n
    <envelope JSON><message bytes>
    TREKEND <crc32 of envelope and message, 8 hex digits>\\n

An entry whose length or checksum does not add up was torn by a crash or a
disk error: it is moved to C{quarantine/} and logged, never delivered.

Per-recipient progress lives beside it in C{state/ID.json}, rewritten by
rename without fsync: losing it after a crash means a recipient may get a
duplicate, never that a message is lost.
"""

import json
import os
import secrets
import time
import zlib

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from trekmail.durable import discard, publish_batch, remove_if_there, write_file
from trekmail.groupcommit import GroupCommit, each
from trekmail.queue import acceptlog
from trekmail.queue.interface import Envelope, SpoolError

MAGIC = b"TREKQ1"
FLUSH_FILE = "flush"
TRAILER = b"TREKEND "
_TRAILER_LENGTH = len(TRAILER) + 9

log = Logger()


class TornEntry(Exception):
    """A spool file that is not whole: quarantined, never delivered."""


def envelope_to_json(envelope):
    return json.dumps(
        {
            "sender": envelope.sender,
            "recipients": list(envelope.recipients),
            "origin": envelope.origin,
            "authenticated_as": envelope.authenticated_as,
            "received_at": envelope.received_at,
            "client_address": envelope.client_address,
            "extra": envelope.extra,
        },
        separators=(",", ":"),
    ).encode("utf-8")


def envelope_from_json(data):
    fields = json.loads(data.decode("utf-8"))
    return Envelope(
        sender=fields["sender"],
        recipients=tuple(fields["recipients"]),
        origin=fields["origin"],
        authenticated_as=fields.get("authenticated_as"),
        received_at=fields.get("received_at", 0.0),
        client_address=fields.get("client_address", ""),
        extra=fields.get("extra") or {},
    )


def encode(envelope, message):
    head = envelope_to_json(envelope)
    crc = zlib.crc32(message, zlib.crc32(head))
    return b"".join(
        (
            b"%s %d %d\n" % (MAGIC, len(head), len(message)),
            head,
            message,
            b"%s%08x\n" % (TRAILER, crc),
        )
    )


def _parse_header(line):
    parts = line.split()
    if len(parts) != 3 or parts[0] != MAGIC:
        raise TornEntry("bad header %r" % (line[:40],))
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        raise TornEntry("bad header %r" % (line[:40],)) from None


def decode(blob):
    """C{(envelope, message)} from a whole file; L{TornEntry} if it is not whole."""
    newline = blob.find(b"\n", 0, 64)
    if newline < 0:
        raise TornEntry("no header")
    head_length, message_length = _parse_header(blob[:newline])
    start = newline + 1
    end = start + head_length + message_length
    if len(blob) != end + _TRAILER_LENGTH:
        raise TornEntry("length %d, expected %d" % (len(blob), end + _TRAILER_LENGTH))
    head = blob[start : start + head_length]
    message = blob[start + head_length : end]
    trailer = blob[end:]
    if not trailer.startswith(TRAILER) or not trailer.endswith(b"\n"):
        raise TornEntry("no trailer")
    if trailer[len(TRAILER) : -1] != b"%08x" % (zlib.crc32(message, zlib.crc32(head)),):
        raise TornEntry("checksum mismatch")
    try:
        return envelope_from_json(head), message
    except (ValueError, KeyError, TypeError) as e:
        raise TornEntry("bad envelope: %s" % (e,)) from None


def read_envelope(path):
    """
    The envelope of a spool file without reading its message: recovery of
    a long queue reads only headers and checks the length; the checksum is
    checked when the message is read for delivery.
    """
    with open(path, "rb") as f:
        first = f.readline(64)
        head_length, message_length = _parse_header(first.rstrip(b"\n"))
        head = f.read(head_length)
        size = os.fstat(f.fileno()).st_size
    if size != len(first) + head_length + message_length + _TRAILER_LENGTH:
        raise TornEntry("length %d does not match its header" % (size,))
    try:
        return envelope_from_json(head)
    except (ValueError, KeyError, TypeError) as e:
        raise TornEntry("bad envelope: %s" % (e,)) from None


def new_queue_id(now):
    return "%011x%s" % (int(now * 1000), secrets.token_hex(5))


class SpoolLayout:
    """The spool's directories under C{DATA_DIR/queue}; shared with the CLI."""

    def __init__(self, root):
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        self.msg = os.path.join(root, "msg")
        self.state = os.path.join(root, "state")
        self.quarantine = os.path.join(root, "quarantine")
        self.control = os.path.join(root, "control")
        self.log = os.path.join(root, "log")

    def create(self):
        for path in (self.tmp, self.msg, self.state, self.quarantine, self.control, self.log):
            os.makedirs(path, mode=0o700, exist_ok=True)

    def message_path(self, queue_id):
        return os.path.join(self.msg, queue_id)

    def state_path(self, queue_id):
        return os.path.join(self.state, queue_id + ".json")

    def file_ids(self):
        return sorted(n for n in os.listdir(self.msg) if not n.startswith("."))

    def queue_ids(self):
        """Every queued message, in files and in the accept log, as the CLI sees the spool."""
        return sorted(set(self.file_ids()) | set(acceptlog.listed(self.log)))

    def read_state(self, queue_id):
        try:
            with open(self.state_path(queue_id), "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            return None

    def write_state(self, queue_id, state):
        """Record progress, unless the message's file was deleted meanwhile."""
        if os.path.exists(self.message_path(queue_id)):
            self.replace_state(queue_id, state)

    def replace_state(self, queue_id, state):
        path = self.state_path(queue_id)
        temporary = path + ".tmp"
        with open(temporary, "wb") as f:
            f.write(json.dumps(state, separators=(",", ":")).encode("utf-8"))
        os.replace(temporary, path)

    def remove(self, queue_id):
        remove_if_there(self.message_path(queue_id), self.state_path(queue_id))

    def remove_state(self, queue_id):
        remove_if_there(self.state_path(queue_id))

    def request_flush(self):
        """Ask a running server to retry every waiting message (C{trekmail queue flush})."""
        with open(os.path.join(self.control, FLUSH_FILE), "w"):
            pass

    def take_flush_request(self):
        path = os.path.join(self.control, FLUSH_FILE)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def quarantine_file(self, path, reason):
        name = os.path.basename(path)
        target = os.path.join(self.quarantine, name)
        os.replace(path, target)
        self._give_reason(target, reason)
        return target

    def quarantine_bytes(self, name, data, reason):
        """Keep bytes that are not a whole entry (a torn accept-log record) for the operator."""
        target = os.path.join(self.quarantine, name)
        with open(target, "wb") as f:
            f.write(data)
        self._give_reason(target, reason)
        log.warn("quarantined {name}: {reason}", name=name, reason=reason)

    def _give_reason(self, target, reason):
        with open(target + ".reason", "w", encoding="utf-8") as f:
            f.write(reason + "\n")


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

    With C{syncers} (an executor), the files are written and fsynced in
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
def accept_log(layout, syncers=None, clock=time.time):
    """The spool's L{acceptlog.AcceptLog}: what outlives a segment moves into C{msg/} files."""
    return acceptlog.AcceptLog(
        layout.log, lambda batch: write_batch(layout, batch, syncers), layout.remove, layout.quarantine_bytes, clock
    )


class Spool:
    """
    The files of the queue.  C{store} is the only write that must be
    durable; everything else (reading, removing, quarantining, moving
    aged entries out of the accept log) runs on the shared worker pool.
    """

    def __init__(self, layout, reactor, workers, writer=None, syncers=None):
        self.layout = layout
        self._reactor = reactor
        self._workers = workers
        self.log = accept_log(layout, syncers, reactor.seconds)
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
        return deferToThreadPool(self._reactor, self._workers, function, *args)


def recover(layout, accepted=None):
    """
    Runs at start-up, off the reactor: what the accept log holds moves
    into files (C{accepted} is the running spool's accept log, so that a
    segment already taking new mail stays).  Files left in C{tmp/} never
    got a C{250} and torn files in C{msg/} cannot be delivered whole; both
    go to quarantine with a log line.
    """
    layout.create()
    for name in os.listdir(layout.tmp):
        path = os.path.join(layout.tmp, name)
        layout.quarantine_file(path, "unfinished write found at start-up")
        log.warn("quarantined unfinished spool write {name}", name=name)
    (accept_log(layout) if accepted is None else accepted).sweep()
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
