"""
The AUTH exchange of the submission door over a StringTransport: what a
broken directory, a cancelled or malformed exchange and pipelined
commands behind a pending login get.
"""

import base64

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.fakes import FakeChecker, TLSStringTransport, login_only_submission, replies
from trekmail.policy.logins import LoginGuard
from trekmail.smtp.submission import ISubmitter, Submitter


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        address = avatar_id.decode() if isinstance(avatar_id, bytes) else avatar_id
        return ISubmitter, Submitter(address), lambda: None


def plain(username, password):
    return base64.b64encode(b"\0" + username + b"\0" + password)


class AuthTests(unittest.TestCase):
    def connect(self, checker, implicit_tls=True):
        self.clock = Clock()
        factory = login_only_submission(Realm(), checker, self.clock, LoginGuard(self.clock), implicit_tls)
        server = factory.buildProtocol(None)
        transport = TLSStringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"EHLO c\r\n")
        replies(transport)
        return server, transport

    def test_directory_unavailable_is_temporary(self):
        checker = FakeChecker()
        checker.unavailable = True
        server, transport = self.connect(checker)
        server.dataReceived(b"AUTH PLAIN " + plain(b"alice@example.com", b"pw") + b"\r\n")
        self.assertEqual(replies(transport), ["454 4.7.0 temporary authentication failure, try again later"])

    def test_cancel_and_malformed(self):
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.com": b"pw"})
        server, transport = self.connect(checker)
        server.dataReceived(b"AUTH LOGIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH PLAIN "
                            + base64.b64encode(b"no-nul") + b"\r\nAUTH CRAM-MD5\r\nNOOP\r\n")
        self.assertEqual([line[:9] for line in replies(transport)],
                         ["334 VXNlc", "501 5.7.0", "501 5.5.2", "501 5.5.2", "504 5.5.4", "250 2.0.0"])

    def test_pipelined_commands_wait_for_the_login(self):
        checker = FakeChecker()
        checker.held = []
        server, transport = self.connect(checker)
        server.dataReceived(b"AUTH PLAIN " + plain(b"alice@example.com", b"pw")
                            + b"\r\nNOOP\r\nAUTH PLAIN x\r\n")
        self.assertEqual(replies(transport), [])
        checker.release()
        self.assertEqual([line[:9] for line in replies(transport)], ["235 2.7.0", "250 2.0.0", "503 5.5.1"])

    def test_an_authorization_identity_other_than_the_login_is_refused(self):
        """RFC 4616: a mailbox may act only as itself; an empty or equal authzid is the login itself."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.com": b"pw"})
        for authzid, expected in [(b"bob@example.com", "535 5.7.8"), (b"alice@example.com", "235 2.7.0"),
                                  (b"Alice@Example.COM", "235 2.7.0"), (b"", "235 2.7.0")]:
            server, transport = self.connect(checker)
            server.dataReceived(b"AUTH PLAIN " + base64.b64encode(authzid + b"\0alice@example.com\0pw") + b"\r\n")
            self.assertEqual([line[:9] for line in replies(transport)], [expected], authzid)
            self.assertEqual(server.authenticated, expected.startswith("235"))

    def test_not_before_tls(self):
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.com": b"pw"})
        server, transport = self.connect(checker, implicit_tls=False)
        server.dataReceived(b"AUTH PLAIN " + plain(b"alice@example.com", b"pw") + b"\r\n")
        self.assertEqual(replies(transport), ["538 5.7.11 encryption required: use STARTTLS first (or port 465)"])
