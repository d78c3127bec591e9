"""
The IMAP protocol with a StringTransport and a task.Clock: timeouts,
hostile input (long lines, literals, nesting, pipelining), STARTTLS and a
directory that cannot answer.
"""

import errno
import sqlite3
from types import SimpleNamespace

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.fakes import FakeChecker, FakeDirectory, FakeStore, TLSStringTransport
from tests.support import capture
from trekmail.imap import parser
from trekmail.imap.limits import ConnectionLimits
from trekmail.imap.server import IMAPFactory, MailUserRealm


class ProtocolTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.checker = FakeChecker()
        self.store = FakeStore()
        self.limits = ConnectionLimits(3, 100)
        self.tls_factory = self.make_factory(implicit_tls=True)

    def make_factory(self, implicit_tls):
        portal = Portal(MailUserRealm(), [self.checker])
        return IMAPFactory(
            portal=portal,
            directory=FakeDirectory(plan="nano", every_mailbox=True),
            store=self.store,
            limits=self.limits,
            clock=self.clock,
            hostname="mail.test",
            tls_options=object(),
            implicit_tls=implicit_tls,
            appendlimit=1000,
        )

    def connect(self, factory=None, host="127.0.0.1"):
        server = (factory or self.tls_factory).buildProtocol(None)
        transport = TLSStringTransport(peerAddress=SimpleNamespace(host=host))
        server.makeConnection(transport)
        return server, transport

    def lines(self, transport):
        out = transport.value().split(b"\r\n")
        transport.clear()
        return [line for line in out if line]

    def login(self):
        server, transport = self.connect()
        self.login_on(server)
        return server, transport

    def login_on(self, server):
        server.transport.clear()
        server.dataReceived(b"a LOGIN alice@example.com pw\r\n")
        self.assertTrue(self.lines(server.transport)[-1].startswith(b"a OK"))

    def test_pre_login_idle_closes_after_60s(self):
        server, transport = self.connect()
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"* BYE Autologout; idle for too long", self.lines(transport))
        self.assertEqual(self.limits.counts, {})

    def test_logged_in_idle_timeout_rearmed_by_idle(self):
        server, transport = self.login()
        self.clock.advance(29 * 60)
        server.dataReceived(b"b IDLE\r\n")
        self.clock.advance(29 * 60)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(60)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.store.open, 0)
        self.assertEqual(self.limits.counts, {})

    def test_directory_unavailable_is_not_a_wrong_password(self):
        self.checker.unavailable = True
        server, transport = self.connect()
        server.dataReceived(b"a LOGIN alice@example.com pw\r\n")
        self.assertEqual(self.lines(transport)[-1], b"a NO [UNAVAILABLE] Directory temporarily unavailable")
        self.checker.unavailable = False
        server.dataReceived(b"b LOGIN alice@example.com wrong\r\n")
        self.assertEqual(self.lines(transport)[-1], b"b NO [AUTHENTICATIONFAILED] Authentication failed")

    def test_failed_logins_are_slowed_then_refused_per_address(self):
        server, transport = self.connect()
        self.lines(transport)
        for n in range(3):
            server.dataReceived(b"f%d LOGIN alice@example.com wrong\r\n" % n)
            self.assertEqual(self.lines(transport), [b"f%d NO [AUTHENTICATIONFAILED] Authentication failed" % n])
        server.dataReceived(b"g LOGIN alice@example.com wrong\r\n")
        self.assertEqual(self.lines(transport), [], "the fourth failure is held back")
        self.clock.advance(1)
        self.assertEqual(self.lines(transport), [b"g NO [AUTHENTICATIONFAILED] Authentication failed"])
        other, other_transport = self.connect(host="127.0.0.9")
        self.lines(other_transport)
        other.dataReceived(b"h LOGIN alice@example.com pw\r\n")
        self.assertTrue(self.lines(other_transport)[-1].startswith(b"h OK"), "another address is not slowed")
        for n in range(6):
            server.dataReceived(b"k%d LOGIN alice@example.com wrong\r\n" % n)
            self.clock.advance(8)
        self.assertEqual(self.lines(transport)[-1], b"* BYE Too many failed logins")
        self.assertTrue(transport.disconnecting)
        again, again_transport = self.connect()
        again.dataReceived(b"m LOGIN alice@example.com pw\r\n")
        self.assertEqual(self.lines(again_transport)[-1],
                         b"m NO [UNAVAILABLE] Too many failed logins from your address, try again later",
                         "refused before the password is even checked")
        self.assertTrue(again_transport.disconnecting)
        self.clock.advance(900)
        later, later_transport = self.connect()
        later.dataReceived(b"n LOGIN alice@example.com pw\r\n")
        self.assertTrue(self.lines(later_transport)[-1].startswith(b"n OK"), "a quiet address is let back in")

    def test_out_of_descriptors_is_a_temporary_refusal(self):
        for error, reply in [
            (OSError(errno.EMFILE, "Too many open files"), b"a NO [UNAVAILABLE] Server busy, try again later"),
            (sqlite3.OperationalError("unable to open database file"),
             b"a NO [UNAVAILABLE] Server busy, try again later"),
            (ValueError("a bug"), b"a NO [SERVERBUG] Internal error"),
        ]:
            self.store.error = error
            server, transport = self.connect()
            server.dataReceived(b"a LOGIN alice@example.com pw\r\n")
            self.assertEqual(self.lines(transport)[-1], reply)
            self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unauthenticated_connections_per_address(self):
        held = [self.connect(host="127.0.0.9") for _ in range(3)]
        events = capture(self)
        _, transport = self.connect(host="127.0.0.9")
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"* BYE Maximum connections exceeded", self.lines(transport))
        self.assertEqual([(e["log_trekmail"], e["listener"], e["client_address"], e["code"], e["reason"])
                          for e in events], [("refused", "imaps", "127.0.0.9", "BYE", "connections")])
        held[0][0].connectionLost(None)
        _, transport = self.connect(host="127.0.0.9")
        self.assertFalse(transport.disconnecting)

    def test_server_wide_total(self):
        self.limits.total = 2
        first, _ = self.connect(host="127.0.0.2")
        self.login_on(first)
        self.connect(host="127.0.0.3")
        _, transport = self.connect(host="127.0.0.4")
        self.assertTrue(transport.disconnecting, "logged-in connections count towards the total too")
        first.connectionLost(None)
        _, transport = self.connect(host="127.0.0.4")
        self.assertFalse(transport.disconnecting)

    def test_long_line_refused_without_buffering_it(self):
        server, transport = self.connect()
        chunk = b"x" * 8192
        for _ in range(10):
            server.dataReceived(chunk)
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"* BAD Command line too long", self.lines(transport))
        self.assertLessEqual(len(server.framer.buffer), parser.MAX_LINE + len(chunk))

    def test_append_over_limit_is_toobig_and_never_held(self):
        server, transport = self.login()
        server.dataReceived(b"b APPEND INBOX {5000}\r\n")
        self.assertEqual(self.lines(transport), [b"b NO [TOOBIG] Literal too big (limit 1000)"])
        server.dataReceived(b"c APPEND INBOX {100000000+}\r\n")
        self.assertEqual(self.lines(transport), [b"c NO [TOOBIG] Literal too big (limit 1000)"])
        for _ in range(100):
            server.dataReceived(b"z" * 65536)
            self.assertEqual(len(server.framer.buffer), 0)
        server.dataReceived(b"z" * (100000000 - 100 * 65536) + b"\r\nd NOOP\r\n")
        self.assertEqual(self.lines(transport), [b"d OK NOOP completed"])

    def test_negative_and_absurd_literals_are_bad(self):
        server, transport = self.login()
        server.dataReceived(b"b APPEND INBOX {-5}\r\n")
        self.assertTrue(self.lines(transport)[-1].startswith(b"b BAD"))
        server.dataReceived(b"c APPEND INBOX {99999999999999999999}\r\n")
        self.assertEqual(self.lines(transport), [b"c BAD Invalid literal size"])
        self.assertFalse(transport.disconnecting)
        server.dataReceived(b"d APPEND INBOX {99999999999999999999+}\r\n")
        self.assertTrue(transport.disconnecting)

    def test_nesting_depth(self):
        server, transport = self.connect()
        self.lines(transport)
        server.dataReceived(b"a ID " + b"(" * 50 + b")" * 50 + b"\r\n")
        self.assertEqual(self.lines(transport), [b"a BAD Lists nested too deeply"])

    def test_pipelined_input_is_bounded(self):
        server, transport = self.connect()
        self.checker.requestAvatarId = lambda credentials: defer.Deferred()
        server.dataReceived(b"a LOGIN alice@example.com pw\r\n")
        server.dataReceived(b"b NOOP\r\n" * (parser.MAX_PIPELINE // 8 + 10))
        self.assertEqual(transport.producerState, "paused")

    def test_starttls_discards_pipelined_commands(self):
        server, transport = self.connect(self.make_factory(implicit_tls=False))
        self.assertIn(b"LOGINDISABLED", self.lines(transport)[0])
        server.dataReceived(b"a STARTTLS\r\nb LOGIN alice@example.com pw\r\n")
        self.assertEqual(self.lines(transport), [b"a OK Begin TLS negotiation now"])
        self.assertIsNotNone(transport.tls_started_with)
        self.assertEqual(self.store.open, 0)
        server.dataReceived(b"c CAPABILITY\r\n")
        self.assertIn(b"AUTH=PLAIN", self.lines(transport)[0])

    def test_an_authorization_identity_other_than_the_login_is_refused(self):
        """RFC 4616 and RFC 5530: acting as another mailbox answers AUTHORIZATIONFAILED, not a login as oneself."""
        import base64
        for authzid, expected in [(b"bob@example.com", b"a NO [AUTHORIZATIONFAILED]"), (b"alice@example.com", b"a OK"),
                                  (b"", b"a OK")]:
            server, transport = self.connect()
            self.lines(transport)
            server.dataReceived(b"a AUTHENTICATE PLAIN " + base64.b64encode(authzid + b"\0alice@example.com\0pw")
                                + b"\r\n")
            self.assertTrue(self.lines(transport)[-1].startswith(expected), authzid)
            self.assertEqual(server.state, "nonauth" if b"NO" in expected else "auth")

    def test_login_before_tls_refused(self):
        server, transport = self.connect(self.make_factory(implicit_tls=False))
        self.lines(transport)
        server.dataReceived(b"a LOGIN alice@example.com pw\r\nb AUTHENTICATE PLAIN\r\n")
        lines = self.lines(transport)
        self.assertTrue(lines[0].startswith(b"a NO [PRIVACYREQUIRED]"))
        self.assertTrue(lines[1].startswith(b"b NO [PRIVACYREQUIRED]"))
        self.assertEqual(self.store.open, 0)
