"""
The one login guard of the server (trekmail/policy/logins.py), with a
task.Clock and checks that the test fires by hand: attempts are counted
when they start, only a few run at once per client address, and SMTP and
IMAP share the count.
"""

import base64
from types import SimpleNamespace

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer

from tests.fakes import FakeDirectory, FakeStore, TLSStringTransport, login_only_submission, replies
from trekmail.imap.cluster import Solo
from trekmail.imap.limits import ConnectionLimits
from trekmail.imap.server import IMAPFactory, MailUserRealm
from trekmail.policy.logins import Busy, Failed, LoginGuard, Throttled
from trekmail.policy.throttle import AuthThrottle
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.smtp.submission import ISubmitter, Submitter


@implementer(ICredentialsChecker)
class HeldChecker:
    """Every check waits until the test fires it."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self):
        self.waiting = []

    def requestAvatarId(self, credentials):
        d = defer.Deferred()
        self.waiting.append(d)
        return d


class GuardTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.checker = HeldChecker()

    def attempts(self, guard, count, client="192.0.2.1"):
        results = []
        for _ in range(count):
            guard.login(client, lambda: self.checker.requestAvatarId(None)).addBoth(results.append)
        return results

    def test_many_at_once_are_refused_only_once_they_failed(self):
        """
        Twenty logins under way from one address are no reason to refuse
        the next (people behind one NAT); once ten of them failed, the
        address is refused, and the failures sent together were answered
        with the delays and the disconnect of failures in turn.
        """
        guard = LoginGuard(self.clock, AuthThrottle(disconnect_after=10), in_progress=20)
        results = self.attempts(guard, 20)
        self.assertEqual((len(self.checker.waiting), results), (20, []))
        for d in self.checker.waiting[:10]:
            d.errback(UnauthorizedLogin())
        self.assertEqual([f.value.verdict.disconnect for f in results], [False] * 9 + [True])
        self.assertTrue(all(f.check(Failed) for f in results))
        self.assertTrue(guard.blocked("192.0.2.1"))
        for d in self.checker.waiting[10:]:
            d.callback("alice@example.com")
        self.assertEqual(results[10:], ["alice@example.com"] * 10, "those already being checked still finish")
        self.assertTrue(self.attempts(guard, 1)[0].check(Throttled))
        self.assertFalse(guard.blocked("192.0.2.2"))

    def test_only_a_few_are_checked_at_once_per_address(self):
        guard = LoginGuard(self.clock, AuthThrottle(), in_progress=3)
        results = self.attempts(guard, 40)
        self.assertEqual(len(self.checker.waiting), 3)
        self.assertEqual(len(results), 37)
        self.assertTrue(all(f.check(Busy) for f in results))
        self.assertEqual(len(self.attempts(guard, 1, client="192.0.2.2")), 0, "another address is not held up")
        self.checker.waiting.pop(0).callback("alice@example.com")
        self.assertEqual(results[-1], "alice@example.com")
        self.attempts(guard, 1)
        self.assertEqual(len(self.checker.waiting), 4, "a finished check frees its place")

    def test_only_so_many_are_checked_at_once_in_all(self):
        guard = LoginGuard(self.clock, AuthThrottle(), in_progress=3, total=4)
        refused = [self.attempts(guard, 1, client="192.0.2.%d" % (n,)) for n in range(1, 7)]
        self.assertEqual(len(self.checker.waiting), 4)
        self.assertEqual([len(r) for r in refused], [0, 0, 0, 0, 1, 1])
        self.assertTrue(all(r[0].check(Busy) for r in refused[4:]))
        self.checker.waiting.pop(0).callback("alice@example.com")
        self.assertEqual(self.attempts(guard, 1, client="192.0.2.9"), [])
        self.assertEqual(len(self.checker.waiting), 4, "a finished check frees its place")

    def test_a_success_or_an_outage_gives_its_count_back(self):
        guard = LoginGuard(self.clock, AuthThrottle(disconnect_after=2), in_progress=5)
        for outcome in ("alice@example.com", DirectoryUnavailable("down")) * 3:
            self.attempts(guard, 1)
            d = self.checker.waiting.pop()
            d.errback(outcome) if isinstance(outcome, Exception) else d.callback(outcome)
        self.assertFalse(guard.blocked("192.0.2.1"))
        self.assertEqual(guard._running, {})


@implementer(ICredentialsChecker)
class PasswordChecker:
    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials):
        if credentials.password != b"pw":
            return defer.fail(UnauthorizedLogin())
        return defer.succeed(credentials.username.decode())


class SubmissionRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return ISubmitter, Submitter(avatar_id), lambda: None


class SharedTests(unittest.TestCase):
    """SMTP and IMAP given one guard, as trekmail/service.py builds them."""

    def setUp(self):
        self.clock = Clock()
        self.guard = LoginGuard(self.clock, AuthThrottle(free=5, disconnect_after=2))
        limits = ConnectionLimits(10, 100)
        directory = FakeDirectory(plan="nano", every_mailbox=True)
        self.imap = IMAPFactory(
            portal=Portal(MailUserRealm(), [PasswordChecker()]),
            directory=directory,
            store=FakeStore(),
            limits=limits,
            clock=self.clock,
            hostname="mail.test",
            tls_options=object(),
            implicit_tls=True,
            cluster=Solo(limits, reactor=self.clock, guard=self.guard),
        )
        self.smtp = login_only_submission(SubmissionRealm(), PasswordChecker(), self.clock, self.guard)

    def connect(self, factory):
        server = factory.buildProtocol(None)
        transport = TLSStringTransport(peerAddress=SimpleNamespace(host="192.0.2.7"))
        server.makeConnection(transport)
        replies(transport)
        return server, transport

    def test_failures_on_imap_count_against_smtp(self):
        for _ in range(2):
            server, transport = self.connect(self.imap)
            server.dataReceived(b"a LOGIN alice@example.com wrong\r\n")
            self.assertIn("a NO [AUTHENTICATIONFAILED] Authentication failed", replies(transport))
        server, transport = self.connect(self.smtp)
        server.dataReceived(b"EHLO c\r\n")
        replies(transport)
        server.dataReceived(b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0pw") + b"\r\n")
        self.assertEqual(replies(transport), ["421 4.7.0 too many failed logins from your address, try again later"])
        self.assertTrue(transport.disconnecting)
