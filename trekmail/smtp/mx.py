"""
The inbound MX (C{[listen] mx}): mail from the Internet for hosted
mailboxes only.

A recipient is accepted when its domain is hosted (C{directory.domain})
and the mailbox exists (C{directory.mailbox}); an unknown local user gets
C{550 5.1.1} and every other destination C{550 5.7.1} relay denied, as do
the unusual address forms of L{trekmail.smtp.address} (C{%} hack, quoted
local parts, source routes, bang paths, a second C{@}) that older relays
have been tricked by.  An address that is no mailbox is resolved by
L{trekmail.realm.recipients} (alias, then C{+tag} cut off, then the
domain's catch-all) and the message is queued for the mailboxes it names.
C{postmaster@} any hosted domain, in any case, is accepted (RFC 5321
4.5.1) and delivered to the hosted mailbox named by C{[mx] postmaster}
when the domain has no postmaster mailbox or alias of its own; it comes
before the catch-all, so abuse reports reach the operator.  A paused mailbox still receives: pausing stops
sending only.  No AUTH here; STARTTLS is offered with the same
buffer-discarding rule as submission, and SIZE and the canonical DATA
form come from L{trekmail.smtp.server}.  Our own unexpired return paths
(L{trekmail.queue.returnpath}) are accepted too, for the reports that
come back to them.  A message whose header block is malformed is refused
at the end of DATA (L{trekmail.smtp.headercheck}); an accepted one gets
our C{Received:} field (L{trekmail.smtp.trace}).  With an
C{authenticator} (L{trekmail.inbound.verdicts}) each message also gets
our C{Authentication-Results:} field, and its DMARC verdict may refuse
it (C{550 5.7.1}) or file it in Junk.
"""

from twisted.internet import defer, protocol

from trekmail import maillog
from trekmail.inbound.verdicts import JUNK, REJECT
from trekmail.queue.interface import Envelope
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.realm.recipients import Recipients
from trekmail.smtp import headercheck, trace
from trekmail.smtp.data import DataIntake
from trekmail.smtp.replies import Reply, failed
from trekmail.smtp.server import ESMTPServer

MAX_RECIPIENTS = 100
"""RFC 5321 4.5.3.1.8: the minimum a server must accept; more get 452 and the client retries them."""


class MXServer(ESMTPServer):
    door = "mx"

    def __init__(self, factory):
        super().__init__(factory.clock, factory.hostname, factory.tls_options)
        self.factory = factory
        self._delivers_to = {}
        """Each accepted recipient that is no mailbox itself: the mailboxes it delivers to."""

    def recipient_refused(self, reason):
        return 550, "5.7.1", "relay denied: " + reason

    @defer.inlineCallbacks
    def check_recipient(self, recipient):
        if len(self._to) >= MAX_RECIPIENTS:
            raise Reply(452, "4.5.3", "too many recipients, send the rest in another transaction", reason="recipients")
        paths = self.factory.return_paths
        if paths is not None and paths.parse(recipient) is not None:
            return  # a report on mail we sent: the queue checks its signature
        directory = self.factory.directory
        recipients = self.factory.recipients
        address = recipient.lower()
        domain = address.rpartition("@")[2]
        try:
            # The mailbox first: on the common path one lookup decides.
            if (yield directory.mailbox(address)) is not None:
                self._delivers_to.pop(address, None)
                return
            hosted = yield directory.domain(domain)
            if hosted is None:
                raise Reply(550, "5.7.1", "relay denied: %s is not a domain hosted here" % (domain,),
                            reason="relay")
            found = yield recipients.named(address)
            if found is None:
                found = yield self._postmaster(address)
            if found is None:
                found = yield recipients.catch_all(hosted[0])
        except DirectoryUnavailable as e:
            raise failed("recipient", e, self.log, self.door)
        if found is None:
            raise Reply(550, "5.1.1", "no such user here: <%s>" % (recipient,), reason="unknown-user")
        self._delivers_to[address] = found

    @defer.inlineCallbacks
    def _postmaster(self, address):
        """C{([mx] postmaster,)} when C{address} of a hosted domain is its postmaster, else C{None}."""
        postmaster = self.factory.postmaster
        if not postmaster or address.rpartition("@")[0] != "postmaster":
            return None
        if (yield self.factory.directory.mailbox(postmaster)) is None:
            self.log.error("[mx] postmaster {postmaster} is not a mailbox here", postmaster=postmaster)
            return None
        return (postmaster,)

    @defer.inlineCallbacks
    def accept_message(self, sender, recipients, message):
        try:
            headercheck.field_names(message)
        except headercheck.MalformedHeader as e:
            raise Reply(550, "5.6.0", "malformed message header: %s" % (e,), reason="header")
        extra = {}
        authenticator = self.factory.authenticator
        if authenticator is not None:
            try:
                verdict = yield authenticator.check(self.client_address, sender,
                                                    self._helo[0].decode("ascii", "replace"), message)
            except Exception as e:
                raise failed("authentication", e, self.log, self.door)
            if verdict.action == REJECT:
                raise Reply(550, "5.7.1", "message refused by the DMARC policy of %s" % (verdict.dmarc.header_from,),
                            reason="dmarc")
            if verdict.action == JUNK:
                extra["folder"] = "Junk"
            message = verdict.stamp(message)
        recipients = tuple(r.lower() for r in recipients)
        envelope = Envelope(
            sender=sender,
            recipients=tuple(dict.fromkeys(m for r in recipients for m in self._delivers_to.get(r, (r,)))),
            origin="mx",
            received_at=self.clock.seconds(),
            client_address=self.client_address,
            extra=extra,
        )
        try:
            queue_id = yield self.factory.queue.enqueue(envelope, message, trace.stamper(self, recipients))
        except Exception as e:
            raise failed("enqueue", e, self.log, self.door)
        maillog.emit_accepted(self.log, queue_id, self.door, self.client_address, self._helo[0], None, sender,
                              recipients, message)
        self.queued(queue_id, sender, len(recipients))
        return queue_id


class MXFactory(protocol.ServerFactory):
    def __init__(self, *, directory, queue, clock, hostname, tls_options, postmaster="", return_paths=None,
                 intake=None, recipient_delimiter="+", authenticator=None):
        self.authenticator = authenticator
        self.intake = intake if intake is not None else DataIntake()
        self.return_paths = return_paths
        self.directory = directory
        self.recipients = Recipients(directory, recipient_delimiter)
        self.queue = queue
        self.clock = clock
        self.hostname = hostname
        self.tls_options = tls_options
        self.postmaster = postmaster.lower()

    def buildProtocol(self, addr):
        return MXServer(self)
