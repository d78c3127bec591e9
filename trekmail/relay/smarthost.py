"""
Relay through a customer's own SMTP provider (docs/sending-rules.md, "SMTP profiles"): the route a
domain takes when it points at a saved profile.

Built on L{trekmail.relay.client}: implicit TLS wraps the connection
before the greeting, STARTTLS is required when the profile says so, and
either way the provider's certificate is checked against the trust roots
(service_identity matches the host name), so the password is sent only
over a verified channel; only a profile whose TLS mode is C{none} sends
it in the clear, because its owner asked for exactly that.

Every attempt ends in a L{RelayResult} that the queue can act on
(C{sent}, C{temporary}: retry, C{permanent}: bounce) and whose
C{explanation} is the plain sentence a report shows (docs/sending-rules.md, "Why mail is not sending" check 9).
"""

from dataclasses import dataclass

from service_identity.exceptions import VerificationError
from twisted.internet import endpoints, error, protocol, ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from zope.interface import implementer

from trekmail.crypto import SecretKeyError
from trekmail import delivery
from trekmail.delivery import ITransport, RouteUnavailable
from trekmail.realm.errors import NotFound
from trekmail.realm.profiles import ProfileAdministration
from trekmail.relay import client

SENT = "sent"
TEMPORARY = "temporary"
PERMANENT = "permanent"


@dataclass(frozen=True)
class RelayResult:
    status: str
    """L{SENT}, L{TEMPORARY} (retry later) or L{PERMANENT} (report and give up)."""
    code: int
    reply: str
    """The provider's own reply (or our account of a connection failure)."""
    explanation: str
    """What went wrong and what to fix, for a delivery report or C{smtp profile test}."""
    outcomes: tuple
    """One L{delivery.Outcome} per recipient."""

    @property
    def ok(self):
        return self.status == SENT


class _Watched:
    """
    An endpoint that remembers why its connection ended: a certificate
    that fails verification shows only there, and the report must say so
    rather than "connection lost".
    """

    def __init__(self, endpoint):
        self._endpoint = endpoint
        self.reason = None

    def connect(self, factory):
        return self._endpoint.connect(_WatchingFactory(factory, self))


class _WatchingFactory(protocol.Factory):
    def __init__(self, inner, watched):
        self._inner = inner
        self._watched = watched

    def buildProtocol(self, addr):
        built = self._inner.buildProtocol(addr)
        lost = built.connectionLost
        watched = self._watched

        def connectionLost(reason=protocol.connectionDone):
            watched.reason = reason
            lost(reason)

        built.connectionLost = connectionLost
        return built


def _untrusted(reason):
    """
    Whether the certificate failed verification: its chain (OpenSSL) or
    its name (service_identity, RFC 6125); either way the server is not
    shown to be the one the profile names, and retrying cannot change it.
    """
    if reason is None:
        return False
    return bool(reason.check(VerificationError)) or "certificate verify failed" in reason.getErrorMessage().lower()


def _certificate_problem(profile, reason):
    """service_identity's error is a repr; the plain fact is the name that did not match."""
    if reason.check(VerificationError):
        return "it is not issued to %s" % (profile.host,)
    return reason.getErrorMessage()


def _refused_on_25(profile, reason):
    return reason is not None and reason.check(error.ConnectionRefusedError) and profile.port == 25


def _explain(profile, code, reply, reason=None):
    where = "SMTP profile %d (%s:%d)" % (profile.id, profile.host, profile.port)
    if reason is not None and reason.check(error.ConnectionRefusedError):
        if profile.port == 25:
            return "%s refused the connection on port 25, which is often blocked: use port 587 with STARTTLS" % (where,)
        return "%s refused the connection: check the host and port" % (where,)
    if _untrusted(reason):
        return (
            "%s presented a TLS certificate that could not be verified (%s); the credentials were not sent."
            " Check the host name, or ask the provider for a valid certificate"
            % (where, _certificate_problem(profile, reason))
        )
    if code in (530, 535, 534, 538) or (code >= 500 and "auth" in reply.lower()):
        return (
            "%s refused the profile's credentials (%s %s): fix the username and password"
            " (Amazon SES wants its SMTP credentials, not the IAM access key), then run"
            " `trekmail smtp profile test %d`" % (where, code, reply, profile.id)
        )
    if "tls" in reply.lower() and code >= 500:
        return "%s does not offer TLS as the profile requires (%s): check the port and TLS mode" % (where, reply)
    if code >= 500:
        return "%s rejected the message: %s %s" % (where, code, reply)
    if code >= 400:
        return "%s answered with a temporary failure: %s %s; delivery will be retried" % (where, code, reply)
    return "delivered through %s" % (where,)


class Smarthost:
    """
    Sends messages through SMTP profiles.

    @param trust_root: what the provider's certificate must chain to
        (C{None}: the platform's trust store); tests pass their own CA.
    """

    log = Logger()

    def __init__(self, reactor, identity, *, trust_root=None, timeout=60):
        self._reactor = reactor
        self._identity = identity.encode("ascii") if isinstance(identity, str) else identity
        self._trust_root = trust_root if trust_root is not None else ssl.platformTrust()
        self._timeout = timeout

    def _tls_options(self, profile):
        return ssl.optionsForClientTLS(profile.host, trustRoot=self._trust_root)

    def _endpoint(self, profile):
        endpoint = endpoints.HostnameEndpoint(self._reactor, profile.host, profile.port, timeout=self._timeout)
        if profile.tls == "implicit":
            endpoint = endpoints.wrapClientTLS(self._tls_options(profile), endpoint)
        return _Watched(endpoint)

    def deliver_via_profile(self, profile, sender, recipients, message):
        """
        Send C{message} (bytes) from C{sender} to C{recipients} through
        C{profile} (a L{trekmail.realm.profiles.ProfileLogin}).

        @return: Deferred firing with a L{RelayResult}; it never fails.
        """
        return self._attempt(profile, client.Job(sender, tuple(recipients), message))

    def check_login(self, profile):
        """
        Connect, secure and authenticate, then QUIT without sending: what
        C{doctor} needs to tell whether a profile works.
        """
        return self._attempt(profile, None)

    def _attempt(self, profile, job):
        pending = [] if job is None else [job]
        tracked = job or client.Job("", ("(login check)",), b"")
        reached = []
        endpoint = self._endpoint(profile)
        options = dict(remote=profile.host, username=profile.username, password=profile.password)
        if profile.tls == "starttls":
            options.update(tls_context=self._tls_options(profile), require_tls=True)
        done = Deferred()

        def next_job():
            reached.append(True)
            return pending.pop() if pending else None

        def finished(outcomes, reason=None):
            result = self._result(profile, outcomes, reason)
            self.log.info(
                "smarthost {profile} {host}:{port}: {status} {code}",
                profile=profile.id, host=profile.host, port=profile.port, status=result.status, code=result.code,
            )
            done.callback(result)

        def closed(connection):
            if not tracked.done.called:
                if job is None and reached and connection.error is None:
                    code, text = 250, "2.0.0 connected and authenticated"
                else:
                    code, text = connection.error or (451, "4.4.2 connection closed before the message was sent")
                tracked.finish(delivery.outcomes(tracked.recipients, code, text, profile.host))
            tracked.done.addCallback(finished, endpoint.reason)

        def failed(reason):
            tracked.finish(delivery.outcomes(
                tracked.recipients, 451, "4.4.1 cannot connect: %s" % (reason.getErrorMessage(),), profile.host
            ))
            tracked.done.addCallback(finished, reason)

        client.connect(endpoint, self._identity, next_job, **options).addCallbacks(closed, failed)
        return done

    def _result(self, profile, outcomes, reason):
        """
        A refused port 25 and an untrusted certificate are configuration
        faults that retrying cannot cure, so they are permanent whatever
        code the connection attempt produced.
        """
        outcomes = tuple(outcomes)
        if all(o.delivered for o in outcomes):
            first = outcomes[0]
            return RelayResult(SENT, first.code, first.text, _explain(profile, first.code, first.text), outcomes)
        failed = [o for o in outcomes if not o.delivered]
        worst = next((o for o in failed if not o.permanent), failed[0])
        code, reply = worst.code, worst.text
        explanation = _explain(profile, code, reply, reason)
        if _refused_on_25(profile, reason) or (_untrusted(reason) and code < 500):
            code = 554
            outcomes = tuple(
                o if o.delivered else delivery.Outcome(o.recipient, code, "5.4.1 " + explanation, o.remote)
                for o in outcomes
            )
        status = PERMANENT if code >= 500 else TEMPORARY
        return RelayResult(status, code, reply, explanation, outcomes)


@implementer(ITransport)
class ProfileTransport:
    """
    One profile as the queue's L{ITransport}: a permanent failure's text
    carries the plain explanation after the provider's reply, so the
    delivery report tells the sender what to fix.
    """

    def __init__(self, smarthost, login):
        self._smarthost = smarthost
        self._login = login

    def deliver(self, sender, recipients, message, sending_domain=None):
        d = self._smarthost.deliver_via_profile(self._login, sender, recipients, message)
        return d.addCallback(self._explained)

    @staticmethod
    def _explained(result):
        return [
            o if o.delivered or result.explanation in o.text
            else delivery.Outcome(o.recipient, o.code, "%s (%s)" % (o.text, result.explanation), o.remote)
            for o in result.outcomes
        ]


def _login(db, keyring, profile_id):
    return ProfileAdministration(db, None, keyring).profile_login(profile_id)


class ProfileTransports:
    """
    The queue router's C{profiles}: credentials are read afresh for each
    attempt, so an edited profile or a rotated key applies at once.
    """

    def __init__(self, database, smarthost, keyring):
        self._database = database
        self._smarthost = smarthost
        self._keyring = keyring

    @inlineCallbacks
    def transport(self, profile_id):
        try:
            login = yield self._database.run(_login, self._keyring, profile_id)
        except NotFound:
            raise RouteUnavailable("5.3.5 SMTP profile %s no longer exists" % (profile_id,), permanent=True)
        except SecretKeyError as e:
            raise RouteUnavailable("4.3.5 SMTP profile %s cannot be used: %s" % (profile_id, e))
        return ProfileTransport(self._smarthost, login)
