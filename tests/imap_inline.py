"""
An IMAP session on a StringTransport against a real Maildir store and
index, whose worker calls run on the test's thread at the next turn of a
task.Clock: L{Session.send} turns it until nothing is due, so tests (and
the fuzzer) see each command's whole answer without a reactor or threads.
"""

import os
from types import SimpleNamespace

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.fakes import FakeChecker, FakeDirectory, TLSStringTransport
from trekmail.imap.limits import ConnectionLimits
from trekmail.imap.server import IMAPFactory, MailUserRealm
from trekmail.imap.store import MailStore
from trekmail.mailstore import maildir_path

ADDRESS = "alice@example.com"


class InlineStore(MailStore):
    def run(self, function, *args):
        done = defer.Deferred()
        self._reactor.callLater(0, lambda: defer.maybeDeferred(function, *args).chainDeferred(done))
        return done

    run_files = run


class Session:
    def __init__(self, testcase, clock=None):
        self.clock = clock or Clock()
        self.clock.advance(1_700_000_000)
        self.data_dir = testcase.mktemp()
        os.makedirs(self.data_dir)
        self.store = InlineStore(self.data_dir, self.clock)
        testcase.addCleanup(self.store.stop)
        self.limits = ConnectionLimits(100, 1000)
        directory = FakeDirectory(plan="nano", every_mailbox=True)
        self.factory = IMAPFactory(
            portal=Portal(MailUserRealm(), [FakeChecker()]),
            directory=directory,
            store=self.store,
            limits=self.limits,
            clock=self.clock,
            hostname="mail.test",
            tls_options=object(),
            implicit_tls=True,
            appendlimit=1024 * 1024,
        )
        self.transport = None
        self.server = None

    def connect(self):
        self.server = self.factory.buildProtocol(None)
        self.transport = TLSStringTransport(peerAddress=SimpleNamespace(host="127.0.0.1"))
        self.server.makeConnection(self.transport)
        self.transport.clear()
        return self

    def root(self):
        return maildir_path(self.data_dir, ADDRESS)

    def send(self, data):
        """Feeds C{data}; returns everything the server wrote in answer."""
        self.transport.clear()
        self.server.dataReceived(data)
        self.settle()
        return self.transport.value()

    def settle(self):
        """Runs the worker calls that are due, and those they make, until none is."""
        while any(call.getTime() <= self.clock.seconds() for call in self.clock.getDelayedCalls()):
            self.clock.advance(0)

    def command(self, line):
        """One command line; returns (untagged output, the tagged reply line)."""
        out = self.send(line + b"\r\n")
        tag = line.split(b" ", 1)[0] + b" "
        head, _, tagged = out.rpartition(b"\r\n" + tag) if not out.startswith(tag) else (b"", b"", out[len(tag):])
        return head, tag + tagged.rstrip(b"\r\n")

    def login(self, select=True):
        self.connect()
        assert self.command(b"l1 LOGIN alice@example.com pw")[1].startswith(b"l1 OK"), self.transport.value()
        if select:
            assert self.command(b"l2 SELECT INBOX")[1].startswith(b"l2 OK")
        return self

    def append(self, raw, folder=b"INBOX"):
        out = self.send(b"ap APPEND %s {%d+}\r\n%s\r\n" % (folder, len(raw), raw))
        assert b"ap OK" in out, out
