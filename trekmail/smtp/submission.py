"""
Message submission (RFC 6409): the door a customer's mail client sends
through, on C{[listen] submissions} (implicit TLS, 465) and C{[listen]
submission} (STARTTLS, 587).

AUTH PLAIN and LOGIN are offered only once TLS is up (C{538 5.7.11}
before), and every login goes through the cred portal under the
server's one L{LoginGuard}, which throttles failures per client address
across every protocol.
The facts (the mailbox context) are read again on each new connection and, within a session, at the first MAIL after
L{CONTEXT_SECONDS}: an upgrade, a suspension or a pause applies within
that time, and a session sending hundreds of messages a second does not
ask the directory for each one.  The checks run in this order:

  MAIL  gate of docs/sending-rules.md (verification, route/Nano, pause, suspension:
        554 5.7.7), envelope sender (550 5.7.1), daily and hourly caps
        (451 4.7.1 / 421 4.7.0), so a client fails early; the caps are
        not asked again while this session counted a message less than
        L{CONTEXT_SECONDS} ago (the check at the end, which counts, is
        the one that holds the cap, so the message that finds the cap
        full is then refused after its DATA instead of at MAIL);
  RCPT  the plan's recipients per message: past it, that RCPT and the
        DATA command get 550 5.5.3, so nothing of the message is accepted;
  end   the header's syntax (550 5.6.0, L{trekmail.smtp.headercheck}),
        header From (550 5.7.1), then the caps again, atomically with
        counting the message (L{trekmail.policy.tally}), then the
        queue; 250 only once the queue holds the message on disk.  A queue
        failure gives the count back and answers 451 4.3.0.

Reply codes for policy verdicts and failures are mapped in
L{trekmail.smtp.replies}, and only there.

A message taken gets the C{Date} and C{Message-ID} it lacks (L{completed})
and our C{Received:} field (L{trekmail.smtp.trace}), which names the
client's address and HELO as the MX's does, but not the login: the
address is what abuse handling and the receiver's own filters need, and
the mailbox is already in the From field, while the login name of an
alias or a shared mailbox is nobody's business.
"""

import base64
import binascii
import secrets
from datetime import datetime, timezone
from email.utils import format_datetime

from twisted.cred import error as cred_error
from twisted.cred.portal import IRealm
from twisted.internet import defer, protocol, task
from twisted.mail._cred import LOGINCredentials
from zope.interface import Interface, implementer

from trekmail import maillog
from trekmail.policy import gate, limits, sender
from trekmail.policy.logins import Busy, Failed, Throttled
from trekmail.queue.interface import Envelope
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.sasl import AuthorizationRefused, MalformedPlain, PlainCredentials
from trekmail.smtp import headercheck, trace
from trekmail.smtp.data import DataIntake
from trekmail.smtp.replies import Reply, failed, refuse
from trekmail.smtp.server import ESMTPServer

CONTEXT_SECONDS = 5.0
"""How long a session reuses what it read about its mailbox."""


class ISubmitter(Interface):
    """The avatar of a submission login: the mailbox that may send."""


@implementer(ISubmitter)
class Submitter:
    def __init__(self, address):
        self.address = address


@implementer(IRealm)
class SubmissionRealm:
    """Refuses paused mailboxes at login (docs/sending-rules.md, check 6: 535 at AUTH)."""

    def __init__(self, directory):
        self.directory = directory

    @defer.inlineCallbacks
    def requestAvatar(self, avatar_id, mind, *interfaces):
        if ISubmitter not in interfaces:
            raise NotImplementedError("submission logins only")
        context = yield self.directory.mailbox(avatar_id)
        if context is None or context.mailbox.paused:
            raise cred_error.UnauthorizedLogin()
        return ISubmitter, Submitter(context.address), lambda: None


class SubmissionServer(ESMTPServer):
    door = "submission"

    def __init__(self, factory, implicit_tls):
        super().__init__(factory.clock, factory.hostname, factory.tls_options, implicit_tls)
        self.challengers = {b"PLAIN": PlainCredentials, b"LOGIN": LOGINCredentials}
        self.factory = factory
        self.portal = factory.portal
        self.submitter = None
        self._caps = None
        self._context = None
        self._known = None
        self._known_at = None
        self._counted_at = None

    @property
    def listener(self):
        return "submissions" if self.implicit_tls else "submission"

    def _reset_transaction(self):
        super()._reset_transaction()
        self._caps = None
        self._context = None

    def extensions(self):
        extensions = super().extensions()
        if self.startedTLS:
            extensions[b"AUTH"] = list(self.challengers)
        return extensions

    # -- AUTH -----------------------------------------------------------

    def ext_AUTH(self, rest):
        if not self.startedTLS:
            raise Reply(538, "5.7.11", "encryption required: use STARTTLS first (or port 465)")
        if self.authenticated:
            raise Reply(503, "5.5.1", "already authenticated")
        if self._from is not None:
            raise Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
        if self.factory.logins.blocked(self.client_address):
            maillog.emit(self.log, maillog.LOGIN, protocol="smtp", client_address=self.client_address, mailbox=None,
                         outcome=maillog.THROTTLED)
            return self._throttled()
        parts = rest.split(None, 1)
        make = self.challengers.get(parts[0].upper()) if parts else None
        if make is None:
            raise Reply(504, "5.5.4", "unrecognised authentication type (use PLAIN or LOGIN)")
        self.challenger = make()
        self.mode = "AUTH"
        if len(parts) > 1:
            self.challenger.getChallenge()
            return self.state_AUTH(parts[1])
        return self.state_AUTH(None)

    def state_AUTH(self, response):
        if response is None:
            self.sendCode(334, base64.b64encode(self.challenger.getChallenge()))
            return None
        self.mode = "COMMAND"
        if response == b"*":
            raise Reply(501, "5.7.0", "authentication cancelled")
        try:
            self.challenger.setResponse(base64.b64decode(response, validate=True))
        except (binascii.Error, MalformedPlain):
            raise Reply(501, "5.5.2", "malformed authentication response")
        except AuthorizationRefused:
            raise Reply(535, "5.7.8", "authentication failed: the authorization identity must be empty or your login")
        if self.challenger.moreChallenges():
            self.mode = "AUTH"
            self.sendCode(334, base64.b64encode(self.challenger.getChallenge()))
            return None
        credentials, self.challenger = self.challenger, None
        d = self.factory.logins.login(self.client_address, lambda: self.portal.login(credentials, None, ISubmitter))
        d = maillog.watch_login(self.log, "smtp", self.client_address, credentials.username, d,
                                lambda result: result[1].address)
        return d.addCallbacks(self._logged_in, self._login_failed)

    def _logged_in(self, result):
        _, self.submitter, _ = result
        self.authenticated = True
        self.reply(235, "2.7.0", "authentication successful")

    def _login_failed(self, failure):
        if failure.check(Throttled):
            return self._throttled()
        if failure.check(Busy):
            raise Reply(454, "4.7.0", "too many logins in progress from your address, try again shortly")
        if not failure.check(Failed):
            raise failed("login", failure, self.log, self.door)
        verdict = failure.value.verdict
        if verdict.delay <= 0:
            return self._answer_failure(verdict.disconnect)
        return task.deferLater(self.clock, verdict.delay, self._answer_failure, verdict.disconnect)

    def _answer_failure(self, disconnect):
        self.reply(535, "5.7.8", "authentication failed: use your full mailbox address and the mailbox password")
        if disconnect:
            self._throttled()

    def _throttled(self):
        self.reply(421, "4.7.0", "too many failed logins from your address, try again later")
        self.close()

    # -- transaction ----------------------------------------------------

    def sender_refused(self, reason):
        return 550, "5.7.1", "sender unauthorised: " + reason

    @defer.inlineCallbacks
    def check_sender(self, address):
        if not self.authenticated:
            raise Reply(530, "5.7.0", "authentication required")
        now = self.clock.seconds()
        context = self._known
        if context is None or not _recent(self._known_at, now):
            try:
                context = yield self.factory.directory.mailbox(self.submitter.address)
            except DirectoryUnavailable as e:
                raise failed("sender", e, self.log, self.door)
            if context is None:
                raise Reply(550, "5.7.1", "sender unauthorised: mailbox %s no longer exists"
                            % (self.submitter.address,), reason="sender")
            self._known, self._known_at = context, now
        denial = gate.denial(context, now) or sender.envelope_denial(address, context.address)
        if denial is not None:
            raise refuse(denial)
        caps = limits.caps_for(context, now)
        if not _recent(self._counted_at, now):
            counts = yield self.factory.tally.counts(context.address, context.account.id, now)
            denial = limits.over_limit(caps, counts)
            if denial is not None:
                raise refuse(denial)
        self._context, self._caps = context, caps

    def check_recipient(self, recipient):
        denial = limits.recipients_denial(self._caps, len(self._to) + 1)
        if denial is not None:
            self._refusal = refuse(denial)
            raise self._refusal

    def check_data(self):
        if self._refusal is not None:
            raise self._refusal

    @defer.inlineCallbacks
    def accept_message(self, address, recipients, message):
        context, caps = self._context, self._caps
        try:
            names = headercheck.field_names(message)
        except headercheck.MalformedHeader as e:
            raise Reply(550, "5.6.0", "malformed message header: %s" % (e,), reason="header")
        denial = sender.header_from_denial(message, context.address)
        if denial is not None:
            raise refuse(denial)
        now = self.clock.seconds()
        message = completed(message, names, now, self.host)
        tally = self.factory.tally
        denial, receipt = yield tally.check_and_record(context.address, context.account.id, caps, now)
        if denial is not None:
            self._counted_at = None
            raise refuse(denial)
        self._counted_at = now
        envelope = Envelope(
            sender=address,
            recipients=recipients,
            origin="submission",
            authenticated_as=context.address,
            received_at=now,
            client_address=self.client_address,
        )
        try:
            queue_id = yield self.factory.queue.enqueue(envelope, message, trace.stamper(self, recipients))
        except Exception as e:
            tally.release(receipt)
            raise failed("enqueue", e, self.log, self.door)
        maillog.emit_accepted(self.log, queue_id, self.listener, self.client_address, self._helo[0], context.address,
                              address, recipients, message)
        self.queued(queue_id, address, len(recipients))
        return queue_id


def completed(message, names, now, hostname):
    """
    C{message} with the C{Date} and C{Message-ID} fields it lacks (RFC 6409
    section 8.2 and 8.3; C{names} are its field names, lower-cased): a
    message without them is refused by some receivers and DKIM verifiers,
    and a client that leaves them out counts on its submission server.
    The id is random (not the queue id, which is not assigned yet) and
    names our host, so it is unique across servers.
    """
    added = b""
    if b"date" not in names:
        added += b"Date: %s\r\n" % (format_datetime(datetime.fromtimestamp(now, timezone.utc)).encode("ascii"),)
    if b"message-id" not in names:
        added += b"Message-ID: <%s@%s>\r\n" % (secrets.token_hex(16).encode("ascii"), hostname)
    return added + message


def _recent(then, now):
    return then is not None and 0 <= now - then < CONTEXT_SECONDS


class SubmissionFactory(protocol.ServerFactory):
    """
    One per listener; both listeners (and IMAP and DAV) share one
    L{LoginGuard} so that a client cannot escape it by switching ports.
    """

    def __init__(self, *, portal, directory, tally, queue, clock, hostname, tls_options, logins, implicit_tls,
                 intake=None):
        self.intake = intake if intake is not None else DataIntake()
        """Where DATA is held until queued: shared by the listeners so its budget caps them together."""
        self.portal = portal
        self.directory = directory
        self.tally = tally
        self.queue = queue
        self.clock = clock
        self.hostname = hostname
        self.tls_options = tls_options
        self.logins = logins
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr):
        return SubmissionServer(self, self.implicit_tls)
