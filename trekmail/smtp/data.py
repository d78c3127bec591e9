"""
The message body on its way in: DATA's end-of-data detection and
dot-unstuffing, the canonical line-ending form, and where the bytes of a
DATA or BDAT body (L{trekmail.smtp.chunking}) wait meanwhile.

A body is kept in memory up to L{MEMORY_THRESHOLD} and past it in an
anonymous temporary file (unlinked from the start, so an aborted
transaction, a dropped connection or a crash leaves nothing behind), so
that a thousand clients each sending most of a large message cost disk,
not memory.  The bytes of every unfinished transaction (and of finished
ones until the queue has answered) count against one L{DataBudget} per
process: past it a transaction is refused with a temporary error instead
of the process growing until the kernel kills it.
"""

import re
import tempfile

MEMORY_THRESHOLD = 262144
IN_FLIGHT = 536870912
"""Bytes of DATA the whole process holds at once (memory and temporary files)."""
DATA_DEADLINE = 1800
"""Seconds a client has from the 354 to the final dot (about 14 KB/s for the largest message): a
client that drips a byte before each idle timeout otherwise holds its transaction for ever."""

STORAGE_FULL = "insufficient system storage for messages in transit, try again later"
"""The text of the 452 4.3.1 that a DATA or BDAT gets when the budget or the disk has no room."""

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_END_OF_DATA = b"\r\n.\r\n"


def canonical(body):
    """
    Dot-unstuffed body (led by the virtual CRLF) -> CRLF-only message bytes.

    A line starts after CRLF or after a bare LF (a bare CR is not a line
    end to Postfix either), and each line start loses one leading dot
    (RFC 5321 4.5.2).  Only CRLF "." CRLF ends the data, so a single dot
    after a bare LF is not the end: it is a line start like any other.
    """
    return crlf_only(body.replace(b"\n.", b"\n")[2:])


def crlf_only(body):
    """
    C{body} with every bare CR and bare LF made a CRLF: the one line-ending
    form DATA and BDAT bodies are stored in, so that nothing downstream
    (DKIM, the relay's own dot-stuffing) can find a line end we did not.
    """
    crlf = body.count(b"\r\n")
    if body.count(b"\r") == crlf and body.count(b"\n") == crlf:
        return body
    return _LINE_ENDS.sub(b"\r\n", body)


class DataBudget:
    """Bytes of DATA held by every transaction of the process together."""

    def __init__(self, limit=IN_FLIGHT):
        self.limit = limit
        self.held = 0

    def full(self):
        return self.held >= self.limit

    def take(self, size):
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size):
        self.held -= size


class DataIntake:
    """What every SMTP session of the process shares for its DATA: the budget and the temporary directory."""

    def __init__(self, budget=None, directory=None, memory_threshold=MEMORY_THRESHOLD, deadline=DATA_DEADLINE):
        self.budget = budget if budget is not None else DataBudget()
        self.directory = directory
        self.memory_threshold = memory_threshold
        self.deadline = deadline

    def spool_file(self):
        return tempfile.TemporaryFile(dir=self.directory, prefix="data-")


class BodyStore:
    """
    Where a message body waits while it arrives: in memory, then in a
    temporary file, within the intake's budget.  Past the size limit
    (C{too_big}) or once the budget or the temporary file fails
    (C{starved}) nothing more is kept, so that the client can still be
    answered at the end of its data, as SMTP requires, without the rest
    costing memory or disk.  L{form} makes the stored bytes the message.
    """

    lead = 0
    """Bytes stored ahead of the message that the size limit does not count."""

    def __init__(self, limit, intake):
        self.limit = limit
        self.intake = intake
        self.size = 0
        self.too_big = False
        self.starved = False
        self._chunks = []
        self._in_memory = 0
        self._file = None
        self._taken = 0

    @staticmethod
    def form(body):
        return crlf_only(body)

    def store(self, chunk):
        if self.too_big or self.starved or not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit + self.lead:
            self.too_big = True
            self.release()
            return
        if not self.intake.budget.take(len(chunk)):
            self.starved = True
            self.release()
            return
        self._taken += len(chunk)
        if self._file is None and self._in_memory + len(chunk) <= self.intake.memory_threshold:
            self._chunks.append(chunk)
            self._in_memory += len(chunk)
            return
        try:
            if self._file is None:
                self._file = self.intake.spool_file()
                self._file.writelines(self._chunks)
                self._chunks = []
            self._file.write(chunk)
        except OSError:
            self.starved = True
            self.release()

    def message(self):
        """The canonical message; the budget stays taken until L{release}."""
        if self._file is None:
            body = b"".join(self._chunks)
        else:
            try:
                self._file.seek(0)
                body = self._file.read()
            except OSError:
                self.starved = True
                self.release()
                return b""
        self._drop_storage()
        message = self.form(body)
        if len(message) > self.limit:
            self.too_big = True
        return message

    def release(self):
        """Frees what the body holds: memory, temporary file, budget.  Harmless twice."""
        self._drop_storage()
        self.intake.budget.give(self._taken)
        self._taken = 0

    def _drop_storage(self):
        self._chunks = []
        self._in_memory = 0
        if self._file is not None:
            spool, self._file = self._file, None
            spool.close()


class DataReader(BodyStore):
    """
    Collects a DATA body from arbitrary chunks.  The last four bytes stay
    unstored so that an end-of-data split across reads is still found; the
    stream is led by a virtual CRLF so that a first line of "." ends it.
    """

    lead = 2

    def __init__(self, limit, intake):
        super().__init__(limit, intake)
        self._held = b"\r\n"

    form = staticmethod(canonical)

    def feed(self, data):
        """
        @return: C{None} while the body goes on, else the bytes received
            after the end of data (often C{b""}).
        """
        window = self._held + data
        end = window.find(_END_OF_DATA)
        if end >= 0:
            self.store(window[: end + 2])
            self._held = b""
            return window[end + 5 :]
        self.store(window[:-4])
        self._held = window[-4:]
        return None
