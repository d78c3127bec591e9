"""
The spool's on-disk format, shared by the writer (L{trekmail.queue.spool}),
the scheduler and the CLI: the directories under C{DATA_DIR/queue} and the
names in them (L{SpoolLayout}), queue ids, and the encoding of one entry.

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
import zlib

from twisted.logger import Logger

from trekmail.durable import remove_if_there
from trekmail.queue import acceptlog
from trekmail.queue.interface import Envelope

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
