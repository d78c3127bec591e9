"""
CHUNKING (RFC 3030): the BDAT command, for every listener.

A BDAT command names the size of the chunk that follows it; the chunk is
read as bytes, never as commands, and the reply comes after its last
byte.  The declared size is not trusted: exactly that many bytes are read,
whatever they hold, and they go into the same L{trekmail.smtp.data.BodyStore}
as DATA's body (memory, then an unlinked temporary file, within the
process's budget), so an enormous declared size costs nothing but the time
the client spends sending it, and that time is bounded by the intake's
deadline, which runs from the first BDAT of a transaction to its LAST (or
to the end of a chunk that is refused).

The rules are DATA's: the size limit counts every chunk together (past it
the rest of the chunk is read and dropped and the BDAT answered C{552
5.2.3}); bare CR and LF become CRLF; the door's checks at the end of the
message are the ones DATA gets.  There is no dot-stuffing and no end
marker, so a C{CRLF.CRLF} inside a chunk is just body (RFC 3030 section
2), and our relay dot-stuffs it when it sends the message on with DATA.

Errors (RFC 3030 sections 2 and 4.2): a chunk refused for any reason is
still read to its end before the refusal, so that its bytes are never run
as commands.  A chunk refused for the body's sake (too big, storage full)
ends the transaction, so that the chunks a pipelining client sent behind it
get C{503} rather than being taken as the start of a new message.  A
BDAT whose size cannot be read leaves no way to tell where its chunk ends:
it is answered C{501} and the connection closed.  DATA in a transaction
that has had a BDAT, and RCPT after one, get C{503}.  RSET, EHLO, HELO and
STARTTLS throw away what the chunks brought.

BINARYMIME is not offered: the stored message is in CRLF canonical form,
which binary content would not survive.
"""

from trekmail.smtp.data import STORAGE_FULL, BodyStore
from trekmail.smtp.replies import Reply

MAX_SIZE_DIGITS = 20
"""A chunk size longer than this is not a size (RFC 3030 allows 1*DIGIT; no body of ours needs more)."""


class Chunk:
    """The chunk being read: how many of its bytes are still to come, and what to answer once they are in."""

    def __init__(self, size, last, refusal):
        self.left = size
        self.size = size
        self.last = last
        self.refusal = refusal


class Chunking:
    """
    BDAT for L{trekmail.smtp.server.ESMTPServer}, which reads the chunk's
    bytes through L{feed_chunk} while L{chunk} is set and drops the body
    with the transaction (L{drop_chunks}).
    """

    chunk = None
    """The L{Chunk} being read, if any."""
    chunks = None
    """The L{BodyStore} of this transaction's chunks so far, once a BDAT was accepted."""

    def ext_BDAT(self, rest):
        words = rest.split()
        last = len(words) == 2 and words[1].upper() == b"LAST"
        if not words or len(words) > 2 or (len(words) == 2 and not last) \
                or not words[0].isdigit() or len(words[0]) > MAX_SIZE_DIGITS:
            self.reply(501, "5.5.4", "syntax: BDAT size [LAST]; the chunk's end is unknown, closing the connection")
            self.close()
            return None
        size = int(words[0])
        self.chunk = Chunk(size, last, self._chunk_refusal())
        if self._deadline is None:
            self._deadline = self.clock.callLater(self.intake.deadline, self._data_overdue)
        if self.chunk.refusal is None and self.chunks is None:
            self.chunks = BodyStore(self.max_message_size, self.intake)
        if size == 0:
            self._chunk_done()
        return None

    def _chunk_refusal(self):
        """The L{Reply} this BDAT gets once its chunk is read, or C{None} to take it."""
        if self._from is None or not self._to:
            return Reply(503, "5.5.1", "need MAIL and RCPT before BDAT")
        try:
            self.check_data()
        except Reply as r:
            return r
        if self.chunks is None and self.intake.budget.full():
            return Reply(452, "4.3.1", STORAGE_FULL, reason="storage")
        return None

    def feed_chunk(self):
        """Take what the buffer holds of the current chunk, and no more."""
        self.resetTimeout()
        chunk = self.chunk
        end = min(len(self._buffer), self._position + chunk.left)
        if chunk.refusal is None:
            self.chunks.store(self._buffer[self._position : end])
        chunk.left -= end - self._position
        self._position = end
        if chunk.left == 0:
            self._chunk_done()

    def _chunk_done(self):
        chunk, self.chunk = self.chunk, None
        body = self.chunks
        if chunk.refusal is not None:
            if chunk.refusal.reason == "storage":
                self._reset_transaction()
            elif body is None:
                self._stop_deadline()
            self.answer(chunk.refusal)
        elif body.too_big or body.starved:
            self.refuse_body(body)
        elif chunk.last:
            self.chunks = None
            self._stop_deadline()
            self.finish_body(body)
        else:
            self.reply(250, "2.0.0", "%d octets received" % (chunk.size,))

    def drop_chunks(self):
        """The transaction's chunks are thrown away (RSET, EHLO, a failed chunk, the end of the connection)."""
        body, self.chunks = self.chunks, None
        if body is not None:
            body.release()
