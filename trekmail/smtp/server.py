"""
The ESMTP wire shared by submission and the MX.

We subclass L{twisted.mail.smtp.ESMTP} and keep what serves: the command
dispatch (C{do_*}/C{ext_*} via C{lookupMethod}), the EHLO reply built from
C{extensions()}, C{sendCode}'s multi-line replies and the idle timeout.
We replace the parts that cannot meet our requirements:

  - The byte intake.  ESMTP is a C{LineOnlyReceiver}: it runs every
    buffered line at once, so (a) lines that follow C{STARTTLS} in the same
    read run inside TLS (CVE-2011-0411), and (b) pipelined commands whose
    check waits on a Deferred are answered out of order.  Here
    L{dataReceived} holds the buffer while a command's Deferred is pending
    (RFC 2920: replies in order), throws it away at STARTTLS (RFC 3207 5),
    bounds command lines (L{MAX_COMMAND_LINE}) and pauses the transport
    when too much waits.
  - MAIL, RCPT and DATA.  Twisted's validate per recipient and stream the
    body line by line into one C{IMessage} per recipient; we hand one
    canonical message to one C{IMessageQueue}, and read the body in
    chunks (no per-line Python work), so those commands are written anew
    with hooks for the doors (L{check_sender}, L{check_recipient},
    L{check_data}, L{accept_message}).  BDAT (RFC 3030) comes from
    L{trekmail.smtp.chunking} and ends in the same L{finish_body}; MAIL's
    C{SMTPUTF8} (RFC 6531) lets the transaction's paths be UTF-8
    (L{trekmail.smtp.address}).
  - Reply texts: every reply after the greeting and EHLO carries an
    enhanced status code (RFC 2034 exempts exactly those two).

Each queued message is logged, but in batches (L{queued}): the text log
observer spent about 0.2 ms formatting each event, 6 % of the CPU of a
submission, and one event listing many messages costs barely more than
one listing one.  A crash can lose the last second of these lines, never
a message: the 250 still waits for the spool's fsync.

DATA canonical form: the body ends only at CRLF "." CRLF (RFC 5321 4.1.1.4);
a bare CR or LF anywhere else is *normalised* to CRLF, after
dot-unstuffing, so the stored message has one line-ending form and nothing
downstream (DKIM, the relay's own dot-stuffing) can read a different end
of data than we did (L{trekmail.smtp.data}).  Body lines are not limited
in length: the SIZE limit bounds a message, which past it stops being
stored and is answered C{552 5.2.3} at its end.  Bodies wait in a
temporary file past a small threshold, all of them together within the
process's budget (C{452 4.3.1} past it), and each must end within a
deadline of its 354 however steadily it drips (L{trekmail.smtp.data}).
"""

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import smtp

from trekmail import maillog
from trekmail.smtp.address import AddressRefused, NeedsSMTPUTF8, PathSyntaxError, parse_path, split_argument
from trekmail.smtp.chunking import Chunking
from trekmail.smtp.data import STORAGE_FULL, DataReader
from trekmail.smtp.replies import Reply, failed

MAX_MESSAGE_SIZE = 26214400
MAX_COMMAND_LINE = 4096
MAX_WAITING = 65536
"""Bytes held while a reply is pending before the transport is paused."""
MAX_ERRORS = 20
"""Syntax and sequence errors (500-504, 555) a session may make before it
is told 421 and closed: a client that only sends junk, or probes
commands, gets no more of the server (Postfix's smtpd_hard_error_limit)."""
_CLIENT_ERRORS = frozenset((500, 501, 502, 503, 504, 555))
QUEUED_LOG_SECONDS = 1.0
QUEUED_LOG_MESSAGES = 100
"""A session logs its queued messages when the oldest unlogged one is this
old or this many wait, and when the connection ends."""

_DEFAULT_STATUS = {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}


class ESMTPServer(Chunking, smtp.ESMTP):
    """
    One session.  Subclasses set C{door} and implement the hooks; each hook
    returns (or fires a Deferred with) C{None} to go on, or raises
    L{Reply} to refuse.  The DATA of every session shares its factory's
    L{trekmail.smtp.data.DataIntake} (one per server: L{trekmail.service}
    gives every SMTP listener the same).
    """

    log = Logger()
    door = "smtp"
    timeout = 300
    max_message_size = MAX_MESSAGE_SIZE
    extended = False
    """Whether the client said EHLO (not HELO): the Received field's C{with} keyword."""
    utf8 = False
    """Whether this transaction's MAIL said SMTPUTF8 (RFC 6531): its addresses may be UTF-8."""

    def __init__(self, clock, hostname, tls_options=None, implicit_tls=False):
        smtp.ESMTP.__init__(self, chal={}, contextFactory=tls_options)
        self.clock = clock
        self.callLater = clock.callLater
        self.host = hostname
        self.implicit_tls = implicit_tls
        self._buffer = b""
        self._position = 0
        self._pending = None
        self._running = False
        self._discarding = False
        self._paused = False
        self._closing = False
        self._reader = None
        self._deadline = None
        self.intake = None
        self._queued = []
        self._queued_since = 0.0
        self._errors = 0
        self._reset_transaction()

    def _reset_transaction(self):
        self._abandon_data()
        self.utf8 = False
        self._from = None
        self._to = []
        self._refusal = None

    # -- intake ---------------------------------------------------------

    def connectionMade(self):
        smtp.ESMTP.connectionMade(self)
        if self.implicit_tls:
            self.startedTLS = True
        peer = self.transport.getPeer()
        self.client_address = getattr(peer, "host", str(peer))
        self.intake = self.factory.intake

    def connectionLost(self, reason):
        self._log_queued()
        self._closing = True
        self._discard_input()
        self._abandon_data()
        smtp.ESMTP.connectionLost(self, reason)

    def dataReceived(self, data):
        if self._closing:
            return
        self._buffer += data
        self._run()

    def _run(self):
        if self._running:
            return
        self._running = True
        try:
            while self._pending is None and not self._closing and self._position < len(self._buffer):
                if self._reader is not None:
                    self._feed_data()
                elif self.chunk is not None:
                    self.feed_chunk()
                elif not self._next_line():
                    break
        finally:
            self._running = False
            self._buffer = self._buffer[self._position :]
            self._position = 0
        if self._closing:
            return
        if self._pending is not None and len(self._buffer) > MAX_WAITING and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        elif self._paused and self._pending is None:
            self._paused = False
            self.transport.resumeProducing()

    def _discard_input(self):
        self._buffer = b""
        self._position = 0

    def _next_line(self):
        """Run the next command line; C{False} when its end has not arrived yet (the part so far is kept)."""
        end = self._buffer.find(b"\n", self._position)
        if end < 0:
            if len(self._buffer) - self._position > MAX_COMMAND_LINE:
                self._discarding = True
                self._position = len(self._buffer)
            return False
        line, self._position = self._buffer[self._position : end], end + 1
        if self._discarding or len(line) > MAX_COMMAND_LINE:
            self._discarding = False
            self.reply(500, "5.5.2", "line too long (the limit is %d bytes)" % (MAX_COMMAND_LINE,))
            return True
        if line.endswith(b"\r"):
            line = line[:-1]
        self.resetTimeout()
        try:
            result = getattr(self, "state_" + self.mode)(line)
        except Reply as r:
            self.answer(r)
            return True
        except Exception as e:
            r = failed("command", e, self.log, self.door)
            self.reply(r.code, r.status, r.text)
            return True
        if isinstance(result, defer.Deferred):
            self._pending = result
            result.addErrback(self._command_failed).addBoth(self._command_done)
        return True

    def _command_failed(self, failure):
        self.answer(failure.value if failure.check(Reply) else failed("command", failure, self.log, self.door))

    def _command_done(self, _):
        self._pending = None
        if self.transport is not None and not self._closing:
            self._run()

    def state_COMMAND(self, line):
        parts = line.strip().split(None, 1)
        if not parts:
            raise Reply(500, "5.5.2", "empty command")
        method = self.lookupMethod(parts[0]) if parts[0].isalpha() else None
        if method is None:
            raise Reply(500, "5.5.1", "command not recognised")
        return method(parts[1] if len(parts) == 2 else b"")

    # -- replies --------------------------------------------------------

    def answer(self, r):
        """Send the L{Reply} C{r}; a refusal (one with a reason) is also a C{refused} event of the mail log."""
        self.reply(r.code, r.status, r.text)
        if r.reason is not None:
            maillog.emit(self.log, maillog.REFUSED, protocol="smtp", listener=self.listener,
                         client_address=getattr(self, "client_address", None), code="%d %s" % (r.code, r.status),
                         reason=r.reason)

    @property
    def listener(self):
        """The listener's name in the mail log (the door; submission's two ports are told apart)."""
        return self.door

    def reply(self, code, status, text):
        if isinstance(text, str):
            text = text.encode("utf-8")
        smtp.ESMTP.sendCode(self, code, status.encode("ascii") + b" " + text)
        if code in _CLIENT_ERRORS and not self._closing:
            self._errors += 1
            if self._errors >= MAX_ERRORS:
                smtp.ESMTP.sendCode(self, 421, b"4.7.0 too many errors in this session, closing the connection")
                self.close()

    def sendCode(self, code, message=b""):
        """
        Replies that Twisted still writes itself (C{do_UNKNOWN} for a client
        typing "UNKNOWN") get a default enhanced status; the greeting, EHLO
        and HELO (starting with our host name) and 334 stay bare (RFC 2034).
        """
        if not isinstance(message, bytes):
            message = str(message).encode("utf-8")
        if code not in (220, 221, 334) and not re.match(rb"^[245]\.\d{1,3}\.\d{1,3} ", message) \
                and not message.startswith(self.host):
            message = _DEFAULT_STATUS.get(code // 100, "5.0.0").encode() + b" " + message
        smtp.ESMTP.sendCode(self, code, message)

    def greeting(self):
        return self.host + b" ESMTP TrekMail"

    def timeoutConnection(self):
        self.reply(421, "4.4.2", "idle for too long, closing the connection")
        self.close()

    def close(self):
        self._closing = True
        self._discard_input()
        self.transport.loseConnection()

    # -- commands -------------------------------------------------------

    def extensions(self):
        extensions = {
            b"ENHANCEDSTATUSCODES": None,
            b"PIPELINING": None,
            b"8BITMIME": None,
            b"SIZE": [str(self.max_message_size).encode()],
            b"CHUNKING": None,
            b"SMTPUTF8": None,
        }
        if self.canStartTLS and not self.startedTLS:
            extensions[b"STARTTLS"] = None
        return extensions

    def do_HELO(self, rest):
        self._reset_transaction()
        self.extended = False
        smtp.ESMTP.do_HELO(self, rest)

    def do_EHLO(self, rest):
        self._reset_transaction()
        self.extended = True
        smtp.ESMTP.do_EHLO(self, rest)

    def do_NOOP(self, rest):
        self.reply(250, "2.0.0", "OK")

    def do_RSET(self, rest):
        self._reset_transaction()
        self.reply(250, "2.0.0", "OK")

    def do_VRFY(self, rest):
        self.reply(252, "2.5.0", "cannot verify, but will accept the message and try")

    def do_QUIT(self, rest):
        self.reply(221, "2.0.0", "bye")
        self.close()

    def ext_STARTTLS(self, rest):
        if self.startedTLS:
            raise Reply(503, "5.5.1", "TLS is already active")
        if not self.canStartTLS:
            raise Reply(454, "4.7.0", "TLS not available")
        # RFC 3207 5 / CVE-2011-0411: nothing sent before the handshake may
        # be run inside TLS, and the client starts again from EHLO.
        self._discard_input()
        self._reset_transaction()
        self._helo = (None, self._helo[1])
        self.reply(220, "2.0.0", "ready to start TLS")
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    def ext_AUTH(self, rest):
        raise Reply(502, "5.5.1", "AUTH is not offered on this port")

    def do_MAIL(self, rest):
        if self._helo[0] is None:
            raise Reply(503, "5.5.1", "say EHLO first")
        if self._from is not None:
            raise Reply(503, "5.5.1", "nested MAIL command: send RSET first")
        path, parameters = self._split(rest, b"FROM")
        self._check_parameters(parameters, ("SIZE", "BODY", "AUTH", "SMTPUTF8"))
        size = parameters.get("SIZE")
        if size is not None:
            if not size.isdigit():
                raise Reply(501, "5.5.4", "SIZE needs a number")
            if int(size) > self.max_message_size:
                raise Reply(552, "5.2.3", "message too big: the limit is %d bytes" % (self.max_message_size,),
                            reason="size")
        body = parameters.get("BODY")
        if body is not None and body.upper() not in (b"7BIT", b"8BITMIME"):
            raise Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
        utf8 = "SMTPUTF8" in parameters
        if utf8 and parameters["SMTPUTF8"] is not None:
            raise Reply(501, "5.5.4", "SMTPUTF8 takes no value")
        try:
            sender = parse_path(path, allow_null=True, utf8=utf8)
        except NeedsSMTPUTF8 as e:
            raise Reply(553, "5.6.7", str(e), reason="sender")
        except AddressRefused as e:
            raise Reply(*self.sender_refused(str(e)), reason="sender")
        return self._then(self.check_sender(sender), self._sender_ok, (sender, utf8))

    def _sender_ok(self, sender_utf8):
        sender, self.utf8 = sender_utf8
        self._from = sender
        self._to = []
        self.reply(250, "2.1.0", "sender <%s> OK" % (sender,))

    def do_RCPT(self, rest):
        if self._from is None:
            raise Reply(503, "5.5.1", "need MAIL before RCPT")
        if self.chunks is not None:
            raise Reply(503, "5.5.1", "RCPT cannot follow BDAT: the message has begun")
        path, parameters = self._split(rest, b"TO")
        self._check_parameters(parameters, ())
        try:
            recipient = parse_path(path, utf8=self.utf8)
        except NeedsSMTPUTF8 as e:
            raise Reply(553, "5.6.7", str(e), reason="recipient")
        except AddressRefused as e:
            raise Reply(*self.recipient_refused(str(e)), reason="recipient")
        return self._then(self.check_recipient(recipient), self._recipient_ok, recipient)

    def _recipient_ok(self, recipient):
        self._to.append(recipient)
        self.reply(250, "2.1.5", "recipient <%s> OK" % (recipient,))

    def do_DATA(self, rest):
        if self._from is None or not self._to:
            raise Reply(503, "5.5.1", "need MAIL and RCPT before DATA")
        if self.chunks is not None:
            raise Reply(503, "5.5.1", "DATA cannot follow BDAT in one transaction (RFC 3030): send RSET first")
        self.check_data()
        if self.intake.budget.full():
            raise Reply(452, "4.3.1", STORAGE_FULL, reason="storage")
        self._reader = DataReader(self.max_message_size, self.intake)
        self._deadline = self.clock.callLater(self.intake.deadline, self._data_overdue)
        self.mode = smtp.DATA
        self.reply(354, "2.0.0", "send the message, end with <CRLF>.<CRLF>")

    def _abandon_data(self):
        """The transaction's DATA or BDAT stops here: its bytes, file, budget and deadline are given back."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.release()
        self.drop_chunks()
        self._stop_deadline()

    def _stop_deadline(self):
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _data_overdue(self):
        self._deadline = None
        self._abandon_data()
        self.mode = smtp.COMMAND
        self._reset_transaction()
        self.reply(421, "4.4.2", "the message took too long to arrive, closing the connection")
        self.close()

    def _feed_data(self):
        self.resetTimeout()
        rest = self._reader.feed(self._buffer[self._position :] if self._position else self._buffer)
        self._position = 0
        self._buffer = b"" if rest is None else rest
        if rest is None:
            return
        reader = self._reader
        self._reader = None
        self._abandon_data()
        self.mode = smtp.COMMAND
        self.finish_body(reader)

    def finish_body(self, reader):
        """The message of a DATA or BDAT transaction is in C{reader}: refuse it or hand it to the door."""
        message = reader.message()
        self.resetTimeout()
        if reader.too_big or reader.starved:
            reader.release()
            self.refuse_body(reader)
            return
        d = defer.maybeDeferred(self.accept_message, self._from, tuple(self._to), message)
        d.addBoth(self._end_transaction, reader)
        d.addCallback(lambda queue_id: self.reply(250, "2.0.0", "OK: queued as %s" % (queue_id,)))
        self._pending = d
        d.addErrback(self._command_failed).addBoth(self._command_done)

    def refuse_body(self, reader):
        """The body in C{reader} was too big or found no room: the transaction ends with the reply that says so."""
        self._reset_transaction()
        if reader.too_big:
            self.answer(Reply(552, "5.2.3", "message too big: the limit is %d bytes" % (self.max_message_size,),
                              reason="size"))
        else:
            self.answer(Reply(452, "4.3.1", STORAGE_FULL, reason="storage"))

    def queued(self, queue_id, sender, recipients):
        """Log that C{queue_id} was queued (from C{sender}, for C{recipients} recipients)."""
        now = self.clock.seconds()
        if not self._queued:
            self._queued_since = now
        self._queued.append((queue_id, sender, recipients))
        if len(self._queued) >= QUEUED_LOG_MESSAGES or now - self._queued_since >= QUEUED_LOG_SECONDS:
            self._log_queued()

    def _log_queued(self):
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        self.log.info(
            "{door} from {client} queued {text}",
            door=self.door,
            client=getattr(self, "client_address", None),
            queued=queued,
            text=", ".join("%s <%s> to %d" % entry for entry in queued),
        )

    def _end_transaction(self, result, reader):
        reader.release()
        self._reset_transaction()
        return result

    def _split(self, rest, keyword):
        try:
            return split_argument(rest, keyword)
        except PathSyntaxError as e:
            raise Reply(501, "5.5.4", str(e))

    def _check_parameters(self, parameters, allowed):
        for name in parameters:
            if name not in allowed:
                raise Reply(555, "5.5.4", "parameter %s is not supported" % (name,))

    def _then(self, checked, accepted, value):
        if isinstance(checked, defer.Deferred):
            return checked.addCallback(lambda _: accepted(value))
        accepted(value)
        return None

    # -- hooks ----------------------------------------------------------

    def sender_refused(self, reason):
        return 553, "5.1.7", "bad sender address: " + reason

    def recipient_refused(self, reason):
        return 553, "5.1.3", "bad recipient address: " + reason

    def check_sender(self, sender):
        """Refuse C{sender} by raising L{Reply}; may return a Deferred."""

    def check_recipient(self, recipient):
        """Refuse C{recipient} by raising L{Reply}; may return a Deferred."""

    def check_data(self):
        """Refuse the DATA command by raising L{Reply}."""

    def accept_message(self, sender, recipients, message):
        """Make C{message} durable; returns (a Deferred of) the queue id."""
        raise NotImplementedError
