"""
One delivery attempt of one message to its pending recipients: which of
them are local (straight into their Maildir, whoever sent the mail), which
are suppressed, and through which route the rest leave, DKIM-signed with
the sending domain's key.

The route is a small pluggable decision (L{Router}): the managed MX relay
or a customer's provider profile; both are
L{trekmail.delivery.ITransport}s, so DKIM signing and the queue's
bookkeeping are the same on every route.  The managed relay and the DKIM
signer are built by the wiring and handed in.
"""

from dataclasses import dataclass

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from trekmail import maillog
from trekmail.delivery import Outcome, RouteUnavailable, SigningError, outcomes, wire_form
from trekmail.groupcommit import GroupCommit, each
from trekmail.realm.routes import MANAGED_ROUTE, refusal, resolve_route

DOMAIN_CACHE_SECONDS = 30
log = Logger()


def domain_of(address):
    return address.rpartition("@")[2].lower()


class Router:
    """
    Turns a L{trekmail.realm.routes.Route} into an L{ITransport}.
    C{profiles}, when given, has C{transport(profile_id)} returning an
    L{ITransport} or a Deferred of one (the BYO SMTP profiles component
    provides it), and may raise L{RouteUnavailable}.
    """

    def __init__(self, managed, profiles=None):
        self.managed = managed
        self.profiles = profiles

    def transport(self, route):
        if route.managed:
            return maybeDeferred(lambda: self.managed)
        if route.profile_id is not None and self.profiles is not None:
            return maybeDeferred(self.profiles.transport, route.profile_id)
        return maybeDeferred(_no_route, route)


def _no_route(route):
    raise RouteUnavailable("4.3.5 route %s is not available" % (route,))


LOCAL, MANAGED, PROFILE = "local", "managed", "profile"
"""The routes the mail log names (L{trekmail.maillog})."""


@dataclass(frozen=True)
class Result:
    """An L{Outcome}, whether it counts as a hard bounce from a remote server, and how it went."""

    outcome: Outcome
    remote: bool = False
    route: str = LOCAL
    suppressed: bool = False


class Deliverer:
    def __init__(self, *, directory, router, signer, suppressions, reactor, workers, mailboxes):
        """
        @param signer: has C{signature(wire, domain, selector, earlier)},
            returning an object whose C{header} goes before the message, or
            raising L{SigningError} (L{trekmail.relay.dkim.Signer}).
        @param mailboxes: a L{trekmail.queue.maildir.MaildirWriter}.
        @param workers: the thread pool for DKIM signatures.
        """
        self._directory = directory
        self._router = router
        self._signer = signer
        self._suppressions = suppressions
        self._reactor = reactor
        self._signatures = GroupCommit(reactor, each(lambda args: signer.signature(*args)), "trekmail-dkim", workers)
        self._mailboxes = mailboxes
        self._domains = {}

    @inlineCallbacks
    def hosted(self, name):
        """C{(Domain, Account)} or C{None}, cached briefly: every message asks."""
        now = self._reactor.seconds()
        cached = self._domains.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = yield self._directory.domain(name)
        self._domains[name] = (now + DOMAIN_CACHE_SECONDS, found)
        return found

    @inlineCallbacks
    def attempt(self, envelope, message, recipients, kept=None, queue_id=None):
        """
        Deferred firing with one L{Result} per recipient.  C{kept}, a dict
        the caller holds for this message across attempts, keeps the DKIM
        signature, so a retry (after a DNS failure, a deferral) or the next
        recipients reuse it instead of signing again.  C{queue_id} goes into
        the managed route's signed return paths.
        """
        sender_context = None
        if envelope.sender:
            sender_context = yield self.hosted(domain_of(envelope.sender))
        local, remote = [], []
        for recipient in recipients:
            if (yield self.hosted(domain_of(recipient))) is not None:
                local.append(recipient)
            else:
                remote.append(recipient)
        results = []
        if local:
            results.extend((yield self._local(envelope, message, local, queue_id)))
        if remote:
            results.extend((yield self._remote(envelope, message, remote, sender_context, kept, queue_id)))
        return results

    @inlineCallbacks
    def _local(self, envelope, message, recipients, queue_id):
        results = []
        existing = []
        for recipient in recipients:
            context = yield self._directory.mailbox(recipient)
            if context is None:
                results.append(Result(Outcome(recipient, 550, "5.1.1 no such mailbox here")))
            else:
                existing.append(context.address)
        if existing:
            folder = envelope.extra.get("folder", "INBOX")
            written = yield self._mailboxes.deliver(envelope.sender, message, existing, folder)
            for address, error in written.items():
                if error is None:
                    maillog.emit(log, maillog.LOCAL_DELIVERY, queue_id=queue_id, mailbox=address, folder=folder)
                    results.append(Result(Outcome(address, 250, "2.0.0 delivered to mailbox")))
                else:
                    log.error("local delivery to {address} failed: {error}", address=address, error=error)
                    results.append(Result(Outcome(address, 451, "4.3.0 mailbox write failed")))
        return results

    @inlineCallbacks
    def _remote(self, envelope, message, recipients, sender_context, kept, queue_id):
        if envelope.origin == "mx":
            return [Result(o, route=MANAGED) for o in outcomes(recipients, 550, "5.7.1 relay denied")]
        results = []
        if sender_context is not None:
            domain, account = sender_context
            route = resolve_route(domain, account)
            kind = MANAGED if route.managed else PROFILE
            refused = refusal(route, account.plan)
            allowed = []
            for recipient in recipients:
                if self._suppressions.is_suppressed(domain.name, recipient):
                    results.append(Result(Outcome(
                        recipient, 550,
                        "5.1.1 %s is suppressed: it hard-bounced repeatedly for %s"
                        " (trekmail suppression remove %s)" % (recipient, domain.name, recipient),
                    ), route=kind, suppressed=True))
                else:
                    allowed.append(recipient)
            recipients = allowed
            if not recipients:
                return results
            if refused:
                return results + [Result(o, route=kind) for o in outcomes(recipients, 554, "5.7.7 " + refused)]
            wire = wire_form(message)
            try:
                signature = yield self._signature(wire, domain, kept)
            except SigningError as e:
                log.error("cannot DKIM-sign for {domain}: {error}", domain=domain.name, error=e)
                code, status = (554, "5.6.0") if e.permanent else (451, "4.3.0")
                return results + [Result(o, route=kind) for o in outcomes(recipients, code, "%s %s" % (status, e))]
            wire = signature.header + wire
        else:
            domain, route, kind, wire = None, MANAGED_ROUTE, MANAGED, wire_form(message)
        try:
            transport = yield self._router.transport(route)
        except RouteUnavailable as e:
            code = 554 if e.permanent else 451
            return results + [Result(o, route=kind) for o in outcomes(recipients, code, str(e))]
        if route.managed:
            sent = yield transport.deliver(envelope.sender, recipients, wire, domain, queue_id=queue_id)
        else:
            sent = yield transport.deliver(envelope.sender, recipients, wire, domain)
        return results + [Result(o, remote=True, route=kind) for o in sent]

    def _signature(self, wire, domain, kept):
        earlier = None if kept is None else kept.get("dkim")
        args = (wire, domain.name, domain.dkim_selector, earlier, domain.dkim_ed25519_selector)
        d = self._signatures.submit(args)
        if kept is not None:
            def keep(signature):
                kept["dkim"] = signature
                return signature
            d.addCallback(keep)
        return d
