"""
Shared test fixtures: a configuration under a temporary directory, an
open realm with an administration front, and a populated example.
"""

import configparser
import io
import os
import ssl

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from trekmail.cli import WallClock, main as cli_main
from trekmail.config import Config
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail import settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 2026-11-21T12:00:00Z, a Saturday: the tests' "now".
NOON = 1795262400.0


NO_DNS = "[dns]\nnameservers = 127.0.0.1:1\n"
"""For sites that ask no DNS: a configured resolver reads no /etc/resolv.conf (and leaves no timer to re-read it)."""


def write_config(directory, extra="", **listen):
    """
    A config file under C{directory} whose data dir, certificate and key
    live there too, with cheap password hashing; returns its path.
    C{extra} is INI text merged over these settings.
    """
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    data = os.path.join(directory, "var")
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_dict({
        "server": {"hostname": "mail.test", "data_dir": data},
        "tls": {
            "certificate": os.path.join(data, "tls", "cert.pem"),
            "private_key": os.path.join(data, "tls", "key.pem"),
        },
        "realm": {"password_scrypt_n": "1024"},
        "listen": dict(listen),
    })
    parser.read_string(extra)
    path = os.path.join(directory, "trekmail.ini")
    with open(path, "w") as f:
        parser.write(f)
    return path


def realm(testcase, now=NOON, extra=""):
    """
    A fresh realm in a temporary directory: C{(config, admin, clock)}; the
    database is closed when the test ends.
    """
    config = Config.from_file(write_config(testcase.mktemp(), extra))
    clock = Clock()
    clock.advance(now)
    db = database.connect(config.database_path)
    database.upgrade(db, schema.SCHEMAS)
    testcase.addCleanup(db.close)
    return config, Administration(db, settings.realm(config), clock), clock


def example(admin, plan="starter", password="correct horse", **account):
    """One account with example.com and alice@example.com; returns the account."""
    record = admin.account_add("owner@example.net", plan, verified=True, **account)
    admin.domain_add("example.com", record.id)
    admin.mailbox_add("alice@example.com", password)
    return record


def example_server(path, password="correct horse"):
    """The L{example} account in the database of the server configured at C{path}, before it starts."""
    config = Config.from_file(path)
    db = database.connect(config.database_path)
    try:
        database.upgrade(db, schema.SCHEMAS)
        example(Administration(db, settings.realm(config), WallClock()), password=password)
    finally:
        db.close()
    return config


def client_context():
    """A client TLS context that accepts the test server's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class CommandLineMixin:
    """For a TestCase running the C{trekmail} CLI in-process on the config file at C{self.config}."""

    def run_cli(self, *argv, stdin=""):
        out, err = io.StringIO(), io.StringIO()
        code = cli_main(["--config", self.config] + list(argv), io.StringIO(stdin), out, err)
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv, stdin=""):
        code, out, err = self.run_cli(*argv, stdin=stdin)
        self.assertEqual((code, err), (0, ""), out)
        return out


class TrackingFactoryMixin:
    """
    Mixed into a server factory: remembers its connections so that a test
    can close them all and wait until each one is gone.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = []

    def buildProtocol(self, addr):
        server = super().buildProtocol(addr)
        lost = defer.Deferred()
        original = server.connectionLost

        def connection_lost(reason=None):
            original(reason)
            if not lost.called:
                lost.callback(None)

        server.connectionLost = connection_lost
        self.connections.append((server, lost))
        return server

    def close_all(self):
        waiting = []
        for server, lost in self.connections:
            if not lost.called:
                server.transport.abortConnection()
                waiting.append(lost)
        return defer.gatherResults(waiting)


def wait_until(condition, timeout=5.0):
    """Polls C{condition} on the reactor, for what a server does after its reply (a worker thread's file removal, a link's message)."""
    deadline = reactor.seconds() + timeout

    def check():
        if condition():
            loop.stop()
        elif reactor.seconds() > deadline:
            raise AssertionError("condition not met in %s s" % (timeout,))
    loop = task.LoopingCall(check)
    loop.clock = reactor
    return loop.start(0.01)


def capture(testcase):
    """The mail-log events published from now on, as a list that grows."""
    events = []

    def observe(event):
        if "log_trekmail" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return events
