"""
Keeping the ACME certificate current: ordered at start when there is
none (or it lacks a configured domain), renewed C{renew_before} seconds
before it expires, retried after a failure, and installed through the
same reload as SIGHUP.  The HTTP-01 responses are served by L{Challenges}
on the C{[listen] http} listener (the port-80 companion of https, where
RFC 8555 section 8.3 has the CA look).
"""

from cryptography import x509
from twisted.application import service
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.web import resource, server

from trekmail import tls

RETRY_SECONDS = 3600.0
"""After a failed order; the certificate in use (if any) stays until it works."""
CHALLENGE_PATH = b"/.well-known/acme-challenge/"
MAX_TOKENS = 100
"""More pending challenges than domains an order carries would be a bug; bounded all the same."""


def renewal_delay(not_after, now, renew_before):
    """Seconds from C{now} until a certificate expiring at C{not_after} is renewed (0: at once)."""
    return max(0.0, not_after - renew_before - now)


def current(path, domains):
    """The expiry (POSIX seconds) of the pair at C{path}, or C{None} when there is none for every one of C{domains}."""
    try:
        with open(path, "rb") as f:
            leaf = x509.load_pem_x509_certificates(f.read())[0]
    except (OSError, ValueError):
        return None
    names = tls.dns_names(leaf)
    if not all(any(tls.name_matches(name, domain) for name in names) for domain in domains):
        return None
    return leaf.not_valid_after_utc.timestamp()


class Challenges(resource.Resource):
    """The key authorizations of pending HTTP-01 challenges, by token; everything else is 404."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.pending = {}

    def publish(self, token, validation):
        if len(self.pending) >= MAX_TOKENS:
            raise RuntimeError("too many pending ACME challenges")
        self.pending[token] = validation

    def withdraw(self, token):
        self.pending.pop(token, None)

    def render_GET(self, request):
        path = request.path
        token = path[len(CHALLENGE_PATH):].decode("ascii", "replace") if path.startswith(CHALLENGE_PATH) else None
        if token not in self.pending:
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"content-type", b"application/octet-stream")
        return self.pending[token].encode("ascii")

    def site(self):
        return server.Site(self)


class Renewal(service.Service):
    """
    @param clock: when to order (C{seconds()} is POSIX time, compared with expiry dates).
    @param order: C{order(publish, withdraw)} orders and keeps a pair, blocking
        (L{trekmail.acmeclient.obtain} with its settings).
    @param run: runs a blocking callable on a worker thread, returning a Deferred.
    @param installed: called once a new pair is kept (the SIGHUP reload).
    @param reactor: for the worker to reach the challenges on the reactor
        thread; C{None} calls them directly (a test's worker that is no thread).
    """

    log = Logger()

    def __init__(self, *, clock, pair, domains, renew_before, order, run, installed, challenges, reactor=None):
        self.clock = clock
        self.pair = pair
        self.domains = domains
        self.renew_before = renew_before
        self.order = order
        self.run = run
        self.installed = installed
        self.challenges = challenges
        self.reactor = reactor
        self.pending = None

    def startService(self):
        super().startService()
        expiry = current(self.pair, self.domains)
        self._schedule(0.0 if expiry is None else renewal_delay(expiry, self.clock.seconds(), self.renew_before))

    def stopService(self):
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        return super().stopService()

    def _schedule(self, delay):
        self.pending = self.clock.callLater(delay, self._renew)

    def _on_reactor(self, function):
        if self.reactor is None:
            return function
        return lambda *args: blockingCallFromThread(self.reactor, function, *args)

    def _renew(self):
        self.log.info("ordering a certificate for {domains}", domains=" ".join(self.domains))
        d = self.run(self.order, self._on_reactor(self.challenges.publish), self._on_reactor(self.challenges.withdraw))
        d.addCallbacks(self._kept, self._failed)

    def _kept(self, pem):
        if not self.running:
            return
        leaf = x509.load_pem_x509_certificates(pem)[0]
        expiry = leaf.not_valid_after_utc.timestamp()
        self.log.info("certificate for {domains} obtained, valid until {until}",
                      domains=" ".join(self.domains), until=leaf.not_valid_after_utc.isoformat())
        self.installed()
        self._schedule(renewal_delay(expiry, self.clock.seconds(), self.renew_before))

    def _failed(self, failure):
        if not self.running:
            return
        self.log.error("certificate for {domains} not obtained ({problem}); trying again in {delay} s",
                       domains=" ".join(self.domains), problem=failure.getErrorMessage(), delay=RETRY_SECONDS)
        self._schedule(RETRY_SECONDS)
