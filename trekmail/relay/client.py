"""
The ESMTP client core shared by the managed MX relay and smarthost
(provider profile) delivery: one connection that sends any number of
messages, each answered per recipient.

It subclasses L{twisted.mail.smtp.ESMTPClient} for the command state
machine, STARTTLS and AUTH, and replaces four parts that cannot meet our
requirements:

 - the body: twisted.mail dot-stuffs each 16 KiB chunk of a file on its
   own, so a C{CRLF.} split across a chunk boundary goes out unstuffed and
   the server sees the message end early (a smuggling hole), and it turns
   every LF into CRLF, so CRLF becomes CRCRLF.  L{trekmail.delivery.wire_form} stuffs the
   whole message at once (RFC 5321 section 4.5.2) after making every line
   end a CRLF, so what goes out is exactly the bytes that were signed;
 - STARTTLS: bytes the server sent after its C{220} but before the
   handshake are discarded, so a man in the middle cannot inject replies
   that the client would read as coming over TLS (CVE-2011-0411 class);
 - results: each message gets one L{Outcome} per recipient instead of one
   callback per connection, so the queue can track recipients separately;
 - the transaction, when the server offers PIPELINING (RFC 2920):
   twisted.mail waits a round trip after MAIL and after every RCPT, which
   made the client the slowest part of a relay to a nearby MX.  MAIL, the
   RCPTs and DATA go out in one write and the replies are read back in
   order, each RCPT reply kept for its recipient; if DATA is refused
   (no recipient accepted) the transaction ends there and RSET follows.
   Without PIPELINING the twisted.mail lock-step is kept.

A message with 8-bit bytes goes with C{BODY=8BITMIME} (RFC 6152) to a
server that offers it; a server that does not gets no MAIL for it, and
the message fails with C{554 5.6.3}: converting it to 7 bit here would
break the DKIM signature made before the route was known (RFC 6152
section 3 allows either).  SMTPUTF8 (RFC 6531) is asked for where the
server offers it and the message needs it; where it does not, what
cannot be downgraded fails (L{trekmail.relay.utf8}).

Each wait for a reply is bounded by RFC 5321 section 4.5.3.2: five
minutes for the greeting, MAIL and RCPT, two for the reply to DATA, ten
after the final dot.
"""

import dataclasses
from collections import deque
from dataclasses import dataclass, field

from OpenSSL import SSL

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.mail import smtp
from twisted.mail._cred import CramMD5ClientAuthenticator, LOGINAuthenticator, PLAINAuthenticator

from trekmail.delivery import Outcome, outcomes
from trekmail.relay import utf8

COMMAND_TIMEOUT = 300
"""RFC 5321 section 4.5.3.2.1-3: the greeting, MAIL and RCPT replies."""
DATA_TIMEOUT = 120
"""Section 4.5.3.2.4: the 354 to DATA."""
END_TIMEOUT = 600
"""
Section 4.5.3.2.6: the reply after the final dot, while the server may be
filtering or writing the message.  The body goes out in one write, so this
wait also covers the data blocks (section 4.5.3.2.5, three minutes each).
"""


def dot_stuff(message):
    """
    The DATA payload for C{message} (already in L{trekmail.delivery.wire_form}): every line
    that starts with a dot gets a second one, then the end marker.
    """
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@dataclass
class Job:
    """
    One message for one connection: fires C{done} with a list of
    L{Outcome}.  C{message} is in L{trekmail.delivery.wire_form} already, as
    L{trekmail.delivery.ITransport} hands it over, so the connection only dot-stuffs it.
    """

    sender: str
    recipients: tuple
    message: bytes
    done: Deferred = field(default_factory=Deferred)
    smtputf8: bool = False
    """Whether its MAIL says SMTPUTF8: set by the connection that takes it, from what the server offers."""

    @property
    def eight_bit(self):
        """Whether the message needs C{BODY=8BITMIME} (RFC 6152)."""
        return not self.message.isascii()

    def finish(self, results):
        if not self.done.called:
            self.done.callback(results)


class DeliveryClient(smtp.ESMTPClient):
    """
    One ESMTP connection.  It asks C{next_job()} for work after the greeting
    and after each message, and says QUIT when that returns C{None}.

    @ivar transactions: messages that got a final answer on this connection,
        so the owner can tell "could not talk to this host" from "done".
    @ivar ran_out: the connection ended because C{next_job()} had nothing
        (other connections to the same host took the work), which says
        nothing against the host.
    """

    debug = False
    timeout = COMMAND_TIMEOUT

    def __init__(self, identity, next_job, *, tls_context=None, require_tls=False,
                 username=None, password=None, remote="", clock=None):
        secret = password.encode("utf-8") if password else None
        super().__init__(secret, tls_context, identity)
        self.heloFallback = not require_tls and not username
        self.requireTransportSecurity = require_tls
        self.requireAuthentication = bool(username)
        if username:
            user = username.encode("utf-8")
            self.registerAuthenticator(CramMD5ClientAuthenticator(user))
            self.registerAuthenticator(LOGINAuthenticator(user))
            self.registerAuthenticator(PLAINAuthenticator(user))
        if clock is not None:
            self.callLater = clock.callLater
        self._next_job = next_job
        self.remote = remote
        self.current = None
        self._next = None
        self.transactions = 0
        self.tls_attempted = False
        self.ran_out = False
        self.error = None
        self.error_reply = False
        self.closed = Deferred()
        self._facts = {}

    def connectionMade(self):
        self._facts = {"peer": getattr(self.transport.getPeer(), "host", ""),
                       "source": getattr(self.transport.getHost(), "host", "")}
        super().connectionMade()

    def _finish(self, job, results):
        """
        Finish C{job} with C{results} stamped with this connection's
        addresses and TLS (for the mail log, L{trekmail.maillog}); the TLS
        facts are read while the connection is up and kept for a job that
        ends with it.
        """
        connected = getattr(self.transport, "connected", False)
        handle = getattr(self.transport, "getHandle", lambda: None)() if connected else None
        if hasattr(handle, "get_protocol_version_name"):
            version = handle.get_protocol_version_name()
            if version and version != "Unknown":
                self._facts["tls"] = version
                self._facts["tls_verified"] = bool(handle.get_context().get_verify_mode() & SSL.VERIFY_PEER)
        job.finish([dataclasses.replace(o, **self._facts) for o in results])

    pipelining = False
    eight_bit_mime = False
    smtputf8 = False

    def esmtpState_serverConfig(self, code, resp):
        """
        Note PIPELINING, 8BITMIME and SMTPUTF8 from each EHLO reply, so what the
        server said in the clear is forgotten after STARTTLS (RFC 3207
        section 4.2).
        """
        keywords = {line.split(None, 1)[0].upper() for line in resp.splitlines() if line.strip()}
        self.pipelining = b"PIPELINING" in keywords
        self.eight_bit_mime = b"8BITMIME" in keywords
        self.smtputf8 = b"SMTPUTF8" in keywords
        super().esmtpState_serverConfig(code, resp)

    def esmtpState_starttls(self, code, resp):
        self.clearLineBuffer()
        self.resp = []
        self.tls_attempted = True
        super().esmtpState_starttls(code, resp)

    def _take(self):
        """
        The next job this server can take: an 8-bit message for a server
        without 8BITMIME is answered here (RFC 6152 section 3), as are the
        recipients that need SMTPUTF8 of a server without it, and the next
        one is asked for.
        """
        while True:
            job = self._next_job()
            if job is None:
                return None
            if job.eight_bit and not self.eight_bit_mime:
                self.transactions += 1
                self._finish(job, outcomes(job.recipients, 554,
                                           "5.6.3 the message has 8-bit content and %s does not offer 8BITMIME"
                                           " (RFC 6152); send it with a quoted-printable or base64 body"
                                           % (self.remote or "the server",), self.remote))
                continue
            job = job if self.smtputf8 else self._downgraded(job)
            if job is not None:
                job.smtputf8 = self.smtputf8 and utf8.needs_smtputf8(job)
                return job

    def _downgraded(self, job):
        """
        C{job} for a server without SMTPUTF8: the recipients that cannot be
        sent there fail now, the rest go in a job of their own whose result
        finishes C{job}; C{None} when none can go.
        """
        refused = utf8.refused(job)
        if not refused:
            return job
        failed = utf8.refusals(refused, job.sender, self.remote)
        if len(refused) == len(job.recipients):
            self.transactions += 1
            self._finish(job, failed)
            return None
        rest = Job(job.sender, tuple(r for r in job.recipients if r not in refused), job.message)
        rest.done.addCallback(lambda results: job.finish(results + [dataclasses.replace(o, **self._facts)
                                                                    for o in failed]))
        return rest

    def getMailFrom(self):
        self.current = self._take()
        if self.current is None:
            self.ran_out = True
            return None
        return self.current.sender

    def getMailTo(self):
        return self.current.recipients

    def smtpState_from(self, code, resp):
        self.setTimeout(COMMAND_TIMEOUT)
        self._from = self.getMailFrom()
        if self._from is None:
            return self._disconnectFromServer()
        if self.pipelining:
            self.transport.write(_commands(self.current))
            return self._begin(self.current)
        self._failresponse = self.smtpTransferFailed
        self.sendLine(_mail(self.current))
        self._expected = [250]
        self._okresponse = self.smtpState_to

    def smtpState_toOrData(self, code, resp):
        """
        twisted.mail's lock-step RCPT, each path written by L{_path}: its
        C{quoteaddr} encodes as ASCII and would fail on a UTF-8 local part.
        """
        if self.lastAddress is not None:
            self.toAddressesResult.append((self.lastAddress, code, resp))
            if code in smtp.SUCCESS:
                self.successAddresses.append(self.lastAddress)
        self.lastAddress = next(self.toAddresses, None)
        if self.lastAddress is not None:
            return self.sendLine(b"RCPT TO:" + _path(self.lastAddress))
        if not self.successAddresses:
            return self.smtpState_msgSent(code, "No recipients accepted")
        self.sendLine(b"DATA")
        self._expected = [354]
        self._okresponse = self.smtpState_data
        self.setTimeout(DATA_TIMEOUT)

    def _begin(self, job):
        """Read the replies to C{job}'s MAIL, RCPTs and DATA, already sent."""
        self.current = job
        self._from = job.sender
        self._awaiting = deque(job.recipients)
        self._mail_reply = None
        self.toAddressesResult = []
        self.successAddresses = []
        self._expected = range(0, 1000)
        self._okresponse = self._pipelinedMail
        self._failresponse = self.smtpTransferFailed

    def _pipelinedMail(self, code, resp):
        self._mail_reply = (code, resp)
        self._okresponse = self._pipelinedRcpt if self._awaiting else self._pipelinedData
        if not self._awaiting:
            self.setTimeout(DATA_TIMEOUT)

    def _pipelinedRcpt(self, code, resp):
        address = self._awaiting.popleft()
        self.toAddressesResult.append((address, code, resp))
        if code in smtp.SUCCESS:
            self.successAddresses.append(address)
        if not self._awaiting:
            self._okresponse = self._pipelinedData
            self.setTimeout(DATA_TIMEOUT)

    def _pipelinedData(self, code, resp):
        if code == 354 and self._mail_reply[0] in smtp.SUCCESS and self.successAddresses:
            return self.smtpState_data(code, resp)
        if code == 354:
            # DATA must fail without a valid recipient (RFC 5321 section
            # 3.3); a server that starts one anyway gets an empty message
            # ended at once, so the replies stay in step with the commands.
            self.transport.write(b".\r\n")
            self.setTimeout(END_TIMEOUT)
            self._okresponse = self._pipelinedEnd
            return
        self._pipelinedEnd(code, resp)

    def _pipelinedEnd(self, code, resp):
        """
        The transaction ended before a body went out: a refused MAIL
        answers for every recipient, otherwise each RCPT reply answers for
        its own; then RSET.
        """
        mail_code, mail_resp = self._mail_reply
        if mail_code not in smtp.SUCCESS:
            self.toAddressesResult = []
            code, resp = mail_code, mail_resp
        super().smtpState_msgSent(code, resp)

    def smtpState_data(self, code, resp):
        """
        Send the body and, when another message is waiting, its MAIL, RCPTs
        and DATA right behind it: RFC 2920 section 3.1 lets the message
        content open a group, so a busy connection spends one round trip
        per message instead of two.
        """
        body = dot_stuff(self.current.message)
        if self.pipelining:
            self._next = self._take()
        if self._next is not None:
            body += _commands(self._next)
        self.transport.write(body)
        self.setTimeout(END_TIMEOUT)
        self._expected = smtp.SUCCESS
        self._okresponse = self.smtpState_msgSent

    def smtpState_msgSent(self, code, resp):
        """
        After a message the server accepted, go straight to the next MAIL:
        a completed transaction needs no RSET (RFC 5321 section 4.1.1.5),
        and skipping it saves a round trip per message on a reused
        connection.  After a refusal, RSET as twisted.mail does, unless the
        next message's commands are already on their way: whatever the
        reply, the transaction is over and the server reads them as new.
        """
        self.setTimeout(COMMAND_TIMEOUT)
        queued, self._next = self._next, None
        if queued is not None:
            self.sentMail(code, resp, len(self.successAddresses), self.toAddressesResult, self.log)
            return self._begin(queued)
        if code not in smtp.SUCCESS or not self.successAddresses:
            return super().smtpState_msgSent(code, resp)
        self.sentMail(code, resp, len(self.successAddresses), self.toAddressesResult, self.log)
        self.toAddressesResult = []
        self._from = None
        return self.smtpState_from(code, resp)

    def sentMail(self, code, resp, numOk, addresses, log):
        job, self.current = self.current, None
        self.transactions += 1
        text = _text(resp)
        if not addresses:
            self._finish(job, outcomes(job.recipients, code, text, self.remote, True))
            return
        results = []
        for address, rcpt_code, rcpt_resp in addresses:
            address = address.decode("utf-8") if isinstance(address, bytes) else str(address)
            if rcpt_code in smtp.SUCCESS and code >= 0:
                results.append(Outcome(address, code, text, self.remote, True))
            else:
                results.append(Outcome(address, rcpt_code, _text(rcpt_resp), self.remote, True))
        self._finish(job, results)

    def sendError(self, exc):
        code = getattr(exc, "code", -1)
        self.error_reply = isinstance(code, int) and code >= 400
        if not self.error_reply:
            code = 451
        self.error = (code, _text(getattr(exc, "resp", b"") or str(exc)))
        super().sendError(exc)

    def connectionLost(self, reason=protocol.connectionDone):
        super().connectionLost(reason)
        jobs = [job for job in (self.current, self._next) if job is not None]
        self.current = self._next = None
        for job in jobs:
            code, text = self.error or (451, "4.4.2 connection lost during the transaction")
            self._finish(job, outcomes(job.recipients, code, text, self.remote,
                                       self.error is not None and self.error_reply))
        self.closed.callback(self)


def _commands(job):
    """MAIL, one RCPT per recipient and DATA, as one pipelined group."""
    return b"".join(
        [_mail(job) + b"\r\n"]
        + [b"RCPT TO:" + _path(r) + b"\r\n" for r in job.recipients]
        + [b"DATA\r\n"]
    )


def _mail(job):
    """MAIL, with C{BODY=8BITMIME} for 8-bit content (RFC 6152 section 2) and C{SMTPUTF8} when the job says so."""
    line = b"MAIL FROM:" + _path(job.sender)
    if job.eight_bit:
        line += b" BODY=8BITMIME"
    return line + b" SMTPUTF8" if job.smtputf8 else line


def _path(address):
    """
    C{<address>} for MAIL and RCPT.  Envelope addresses were checked when
    the message was accepted, so twisted.mail's C{quoteaddr}, which runs
    email.utils' header parser on each (and drops the quotes of a quoted
    local part), has nothing to add.  A UTF-8 local part goes only to a
    server that offered SMTPUTF8 (L{DeliveryClient._take}).
    """
    return b"<" + address.encode("utf-8") + b">"


def _text(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())


class _Factory(protocol.Factory):
    def __init__(self, identity, next_job, options):
        self._identity = identity
        self._next_job = next_job
        self._options = options

    def buildProtocol(self, addr):
        return DeliveryClient(self._identity, self._next_job, **self._options)


def connect(endpoint, identity, next_job, clients=None, **options):
    """
    Open one connection through C{endpoint} that takes jobs from
    C{next_job} until it returns C{None}.  Returns a Deferred firing with
    the L{DeliveryClient} once the connection is over (its C{error} says
    why, if it ended early), or failing when it could not connect.
    Options: C{tls_context}, C{require_tls}, C{username}, C{password},
    C{remote} (the server's name for reports), C{clock} (for the
    five-minute reply timeout).  C{clients}, a set, holds the client while
    it is connected, so its owner can close every connection on shutdown.
    """
    d = endpoint.connect(_Factory(identity, next_job, options))

    def connected(client):
        if clients is not None:
            clients.add(client)
            client.closed.addBoth(lambda result: (clients.discard(client), result)[1])
        return client.closed

    d.addCallback(connected)
    return d

