"""
A submission server on real loopback sockets with real TLS, for tests that
drive it with smtplib in a thread: both listeners (implicit TLS and
STARTTLS) built by L{trekmail.service}'s own builders, a real sqlite
realm, a fake queue and a task.Clock for the policy's time (the sockets
run on the real reactor), with a relaxed failed-login throttle.
"""

import smtplib

from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from tests import support
from tests.support import TrackingFactoryMixin, client_context
from tests.fakes import FakeQueue
from trekmail.policy.limits import DAY
from trekmail.policy.logins import LoginGuard
from trekmail.policy.throttle import AuthThrottle
from trekmail.service import Components, served_factory, submission_factories
from trekmail.smtp.submission import SubmissionFactory

PASSWORD = "correct horse"
LATER = support.NOON + 10 * DAY
"""The server's default "now": ten days after the test domains were made, past warmup."""


class TrackingFactory(TrackingFactoryMixin, SubmissionFactory):
    pass


class Site:
    def __init__(self, testcase, now=LATER, throttle=None, clock=None, in_progress=1000):
        self.testcase = testcase
        self.config, self.admin, _ = support.realm(testcase, extra=support.NO_DNS)
        self.clock = clock
        if clock is None:
            self.clock = Clock()
            self.clock.advance(now)
        self.queue = FakeQueue()
        self.clients = ThreadPool(minthreads=0, maxthreads=32, name="smtp-test-clients")
        self.clients.start()
        testcase.addCleanup(self.clients.stop)
        self.throttle = throttle or AuthThrottle(free=1000, disconnect_after=1000)
        self.logins = LoginGuard(self.clock, self.throttle, in_progress)
        self.stopped = []
        self.start()

    def start(self):
        """Build the server with the wiring's own builders and listen, as a server process does at start-up."""
        testcase = self.testcase
        self.components = Components(self.config, reactor, clock=self.clock, logins=self.logins)
        self.database = self.components.database
        self.database.start()
        testcase.addCleanup(self.stop_database, self.database)
        self.components.hashing.start()
        testcase.addCleanup(self.components.hashing.stop)
        self.ports = {}
        self.listening = []
        for name, factory in submission_factories(self.components, self.queue, TrackingFactory).items():
            testcase.addCleanup(factory.close_all)
            served = served_factory(self.components, name, factory, factory.implicit_tls)
            port = reactor.listenTCP(0, served, interface="127.0.0.1")
            self.listening.append(port)
            testcase.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port

    def stop_database(self, threaded):
        if threaded not in self.stopped:
            self.stopped.append(threaded)
            threaded.stop()

    @defer.inlineCallbacks
    def restart(self):
        """Stop listening and close the database, then start again on the same files."""
        for port in self.listening:
            yield port.stopListening()
        self.stop_database(self.database)
        self.start()

    def account(self, plan="starter", owner="owner@example.net", domain="example.com",
                mailboxes=("alice",), **options):
        record = self.admin.account_add(owner, plan, verified=options.pop("verified", True), **options)
        self.admin.domain_add(domain, record.id)
        for local in mailboxes:
            self.admin.mailbox_add("%s@%s" % (local, domain), PASSWORD)
        return record

    def connect(self, port="submissions", login=None, password=PASSWORD, source="127.0.0.1"):
        """A connected (and, given C{login}, authenticated) smtplib client; call in a thread."""
        if port == "submissions":
            client = smtplib.SMTP_SSL("127.0.0.1", self.ports[port], context=client_context(),
                                      source_address=(source, 0), timeout=30)
        else:
            client = smtplib.SMTP("127.0.0.1", self.ports[port], source_address=(source, 0), timeout=30)
            client.starttls(context=client_context())
        client.ehlo("client.test")
        if login is not None:
            client.auth("PLAIN", lambda challenge=None: "\0%s\0%s" % (login, password))
        return client

    def in_thread(self, function, *args, **kwargs):
        """
        Run a blocking client in the test's own pool: the reactor's pool
        does the server's password hashing and must stay free.
        """
        return threads.deferToThreadPool(reactor, self.clients, function, *args, **kwargs)


def message(sender, recipients=("bob@remote.test",), subject="hello", body="Hi.\r\n", extra=""):
    return (
        "From: %s\r\nTo: %s\r\nSubject: %s\r\n%s\r\n%s" % (sender, ", ".join(recipients), subject, extra, body)
    ).encode()


def send(client, sender, recipients=("bob@remote.test",), data=None):
    """One transaction with low-level commands: the list of (code, text) replies; stops at a refusal."""
    result = []

    def step(code, text):
        result.append((code, text.decode() if isinstance(text, bytes) else text))
        return code

    if step(*client.mail(sender)) != 250:
        return result
    accepted = 0
    for recipient in recipients:
        if step(*client.rcpt(recipient)) == 250:
            accepted += 1
    code, text = client.docmd("DATA")
    step(code, text)
    if code != 354:
        client.rset()
        return result
    payload = message(sender, recipients) if data is None else data
    step(*_body(client, payload))
    return result


def _body(client, payload):
    quoted = smtplib.quotedata(payload.decode("latin-1")).encode("latin-1")
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    client.send(quoted + b".\r\n")
    return client.getreply()
