"""
The accept log: where the spool puts a message before the C{250}.

Why not straight into a file of its own: on this kind of disk, creating
and fsyncing a new file costs 0.5-1.3 ms of kernel time (inode
allocation scans past the inodes freed in the last minutes, then the
inode and the directory are written out), which at a thousand messages
a second was most of a core and kept every 250 waiting.  Appending a
whole group-commit batch to one open segment and calling C{fdatasync}
once costs about 15 us per message.  Most mail leaves within seconds, so
it never needs a file at all: a delivered message only gets its id
appended to the segment's deletion list.  What is still queued when its
segment has taken nothing for C{LOG_SECONDS} is moved into a file of its
own under C{msg/} (fsynced there before the segment goes), where the
queue keeps deferred mail.

On disk, under C{queue/log/}:
  - C{SEQ.seg}: records C{TREKLOG <queue id> <length>\\n<spool entry>},
    the entry in the spool's own format (L{trekmail.queue.spoolformat.encode}),
    appended in batches, each batch made durable by one C{fdatasync}.
    A failed write is cut off and seals the segment, so a torn record is
    only ever at the end of one.
  - C{SEQ.del}: ids of the segment's messages that are gone (delivered,
    or deleted by the operator), one per line, appended without fsync: a
    crash may deliver such a message again, never lose one.

At start-up every segment left by the previous run is moved out into
files (L{AcceptLog.sweep}), so recovery itself only ever reads C{msg/}.

Thread safety: C{append} runs on the spool's writer thread, the rest on
worker threads; C{_appending} keeps a seal out of a batch's write, and
C{_lock} guards the index of where each message is, and is held while a
removal names its message in a deletion list, so that moving a segment
out, once it has taken a message off the index, finds every earlier
removal in that list.
"""

import os
import re
import threading

from twisted.logger import Logger

from trekmail.durable import fsync_directory, remove_if_there, write_all

RECORD = b"TREKLOG"
SEGMENT = ".seg"
DELETED = ".del"
SEGMENT_BYTES = 16 << 20
LOG_SECONDS = 30
_HEAD_LIMIT = 128
_COALESCE_BYTES = 1 << 20
_QUEUE_ID = re.compile(rb"[0-9A-Za-z]{1,64}")

log = Logger()


class _Segment:
    def __init__(self, created):
        self.created = created
        self.appended = created
        self.live = set()
        self.sealed = False


def segment_name(seq):
    return "%016x" % (seq,)


def segment_of(path):
    """The sequence number of the segment at C{path}."""
    return int(os.path.splitext(os.path.basename(path))[0], 16)


def record(queue_id, blob):
    return b"%s %s %d\n" % (RECORD, queue_id.encode("ascii"), len(blob))


def read_records(path):
    """
    C{(records, tail, size)}: each whole record as C{(queue_id, offset,
    length)} of its entry, the offset of the bytes after the last whole
    one (a write the crash cut short, which never got its C{250}), and the
    segment's size.  Only the record headers are read.
    """
    records = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        position = 0
        while position < size:
            parts = f.readline(_HEAD_LIMIT).rstrip(b"\n").split(b" ")
            if len(parts) != 3 or parts[0] != RECORD or not _QUEUE_ID.fullmatch(parts[1]) or not parts[2].isdigit():
                break
            start = f.tell()
            end = start + int(parts[2])
            if end > size:
                break
            records.append((parts[1].decode("ascii"), start, end - start))
            position = f.seek(end)
    return records, position, size


def read_at(path, offset, length):
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def read_deleted(path):
    try:
        with open(path, "rb") as f:
            return {line.decode("ascii", "replace") for line in f.read().split(b"\n") if line}
    except FileNotFoundError:
        return set()


def mark_deleted(directory, seq, queue_ids):
    """Append to C{seq}'s deletion list; C{O_APPEND} keeps the CLI's and the server's lines whole."""
    fd = os.open(os.path.join(directory, segment_name(seq) + DELETED), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        write_all(fd, b"".join(b"%s\n" % (queue_id.encode("ascii"),) for queue_id in queue_ids))
    finally:
        os.close(fd)


def segments_on_disk(directory):
    """Sequence numbers of the segments in C{directory}, oldest first."""
    found = []
    for name in os.listdir(directory):
        stem, suffix = os.path.splitext(name)
        if suffix == SEGMENT:
            try:
                found.append(int(stem, 16))
            except ValueError:
                continue
    return sorted(found)


def listed(directory):
    """
    C{{queue_id: (path, offset, length)}} for every message in the
    segments of C{directory} not on a deletion list: what the CLI shows
    and deletes, read without a server.
    """
    entries = {}
    for seq in segments_on_disk(directory):
        base = os.path.join(directory, segment_name(seq))
        try:
            records, _, _ = read_records(base + SEGMENT)
        except FileNotFoundError:
            continue
        deleted = read_deleted(base + DELETED)
        for queue_id, offset, length in records:
            if queue_id not in deleted:
                entries[queue_id] = (base + SEGMENT, offset, length)
    return entries


class AcceptLog:
    """
    @param materialize: C{materialize([(queue_id, blob)])} makes each entry
        a durable file of its own and returns one C{None} or exception per
        entry (the spool's L{trekmail.queue.spool.write_batch}).
    @param unlink: C{unlink(queue_id)} removes an entry's file (and state).
    @param quarantine: C{quarantine(name, data, reason)} keeps bytes that
        cannot be delivered.
    @param clock: C{clock()} is the time segments age by, and numbers
        them (in nanoseconds, kept rising): the reactor's C{seconds}.
    """

    def __init__(self, directory, materialize, unlink, quarantine, clock):
        self.directory = directory
        self._materialize = materialize
        self._unlink = unlink
        self._quarantine = quarantine
        self._clock = clock
        self._appending = threading.Lock()
        self._lock = threading.Lock()
        self._where = {}
        self._segments = {}
        self._fd = None
        self._seq = None
        self._size = 0
        self._last_seq = 0

    def _path(self, seq, suffix=SEGMENT):
        return os.path.join(self.directory, segment_name(seq) + suffix)

    # -- the writer thread

    def append(self, batch):
        """
        Make every C{(queue_id, blob)} of C{batch} durable with one write
        and one C{fdatasync}.  Returns one C{None} or C{OSError} per entry.
        """
        with self._appending:
            now = self._clock()
            if self._fd is not None and self._segments[self._seq].created <= now - LOG_SECONDS:
                self._seal()
            try:
                if self._fd is None:
                    self._open(now)
                chunks = []
                offset = self._size
                located = []
                for queue_id, blob in batch:
                    head = record(queue_id, blob)
                    chunks += (head, blob)
                    offset += len(head)
                    located.append((queue_id, offset, len(blob)))
                    offset += len(blob)
                write_all(self._fd, *_coalesced(chunks))
                os.fdatasync(self._fd)
            except OSError as e:
                self._take_back(batch)
                return [e] * len(batch)
            seq = self._seq
            self._size = offset
            with self._lock:
                segment = self._segments[seq]
                segment.appended = now
                live = segment.live
                for queue_id, start, length in located:
                    self._where[queue_id] = (seq, start, length)
                    live.add(queue_id)
            if self._size >= SEGMENT_BYTES:
                self._seal()
        return [None] * len(batch)

    def _open(self, now):
        if not self._last_seq:
            self._last_seq = max(segments_on_disk(self.directory), default=0)
        seq = max(int(now * 1_000_000_000), self._last_seq + 1)
        path = self._path(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        self._fd, self._seq, self._size, self._last_seq = fd, seq, 0, seq
        with self._lock:
            self._segments[seq] = _Segment(now)

    def _take_back(self, batch):
        """
        A batch that failed got a 4xx, so the client will send it again:
        its records must not be delivered too.  Cut them off the segment,
        or failing that name them in its deletion list, and seal it.
        """
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            try:
                mark_deleted(self.directory, self._seq, [queue_id for queue_id, _ in batch])
            except OSError:
                log.error("accept-log segment {seq} keeps a failed batch", seq=segment_name(self._seq))
        self._seal()

    def _seal(self):
        if self._fd is None:
            return
        os.close(self._fd)
        with self._lock:
            self._segments[self._seq].sealed = True
        self._fd = self._seq = None

    def close(self):
        with self._appending:
            self._seal()

    # -- worker threads

    def locate(self, queue_id):
        """C{(path, offset, length)} of a message still in the log, else C{None}."""
        with self._lock:
            where = self._where.get(queue_id)
        if where is None:
            return None
        seq, offset, length = where
        return self._path(seq), offset, length

    def remove(self, queue_id):
        """Forget a delivered message; C{False} if it is not in the log (it has a file)."""
        with self._lock:
            where = self._where.pop(queue_id, None)
            if where is None:
                return False
            segment = self._segments.get(where[0])
            if segment is not None:
                segment.live.discard(queue_id)
            mark_deleted(self.directory, where[0], [queue_id])
        return True

    def present(self):
        """Ids still in the log that no deletion list names (the CLI's deletions show here)."""
        with self._lock:
            by_segment = {seq: set(segment.live) for seq, segment in self._segments.items()}
        present = set()
        for seq, live in by_segment.items():
            present |= live - read_deleted(self._path(seq, DELETED))
        return present

    def sweep(self, now=None):
        """
        Move what is still queued in segments that took nothing for
        C{LOG_SECONDS} (and in every segment a previous run left) into
        files, then delete those segments.  A segment takes new mail for
        at most C{LOG_SECONDS}, so every message waits that long, and
        never twice that long, for its file.  A sealed segment whose mail
        has all left goes at once, so under steady delivery the log holds
        little more than the mail in flight.  A segment whose entries
        could not all be written stays for the next sweep.
        """
        cutoff = (self._clock() if now is None else now) - LOG_SECONDS
        with self._appending:
            if self._seq is not None and self._segments[self._seq].appended <= cutoff:
                self._seal()
            with self._lock:
                due = [seq for seq, s in self._segments.items() if s.sealed and (s.appended <= cutoff or not s.live)]
                known = set(self._segments)
            due += [seq for seq in segments_on_disk(self.directory) if seq not in known]
        for seq in sorted(due):
            self._move_out(seq)
        self._forget_orphan_deletions()

    def _move_out(self, seq):
        path = self._path(seq)
        try:
            records, tail, size = read_records(path)
            if tail < size:
                self._quarantine(segment_name(seq) + ".tail", read_at(path, tail, size - tail),
                                 "unfinished write at the end of an accept-log segment")
        except FileNotFoundError:
            records = []
        deleted = read_deleted(self._path(seq, DELETED))
        moving = [(queue_id, offset, length) for queue_id, offset, length in records if queue_id not in deleted]
        moved = set()
        for group in _bounded(moving, SEGMENT_BYTES):
            batch = [(queue_id, read_at(path, offset, length)) for queue_id, offset, length in group]
            results = self._materialize(batch)
            moved.update(queue_id for (queue_id, _), result in zip(batch, results) if result is None)
        with self._lock:
            for queue_id in moved:
                self._where.pop(queue_id, None)
        for queue_id in read_deleted(self._path(seq, DELETED)) & moved:
            self._unlink(queue_id)
        if len(moved) < len(moving):
            return
        with self._lock:
            segment = self._segments.pop(seq, None)
            for queue_id in segment.live if segment else ():
                self._where.pop(queue_id, None)
        remove_if_there(self._path(seq), self._path(seq, DELETED))

    def _forget_orphan_deletions(self):
        """
        A removal racing the move-out of its segment can leave a deletion
        list behind.  The lists are read before the segments: a list of a
        segment this run opened is only written once that segment is known.
        """
        lists = {}
        for name in os.listdir(self.directory):
            stem, suffix = os.path.splitext(name)
            if suffix == DELETED:
                try:
                    lists[int(stem, 16)] = name
                except ValueError:
                    continue
        with self._lock:
            keep = set(self._segments)
        keep.update(segments_on_disk(self.directory))
        for seq, name in lists.items():
            if seq not in keep:
                remove_if_there(os.path.join(self.directory, name))


def _bounded(records, limit):
    """C{records} in groups of at most C{limit} bytes (or one record), so moving out never holds a whole segment."""
    group, size = [], 0
    for item in records:
        if group and size + item[2] > limit:
            yield group
            group, size = [], 0
        group.append(item)
        size += item[2]
    if group:
        yield group


def _coalesced(chunks):
    """One C{write} for a batch of ordinary messages; large ones are written as they are rather than copied."""
    if sum(map(len, chunks)) <= _COALESCE_BYTES:
        return [b"".join(chunks)]
    return chunks
