"""
RFC 5321 4.5.1: C{postmaster@} every hosted domain is deliverable, in
any case, to the mailbox C{[mx] postmaster} names; a domain's own
postmaster mailbox still comes first.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from tests.support import write_config
from trekmail.config import Config, ConfigError
from trekmail.service import Components, mx_service
from trekmail.smtp.mx import MXFactory

OPERATOR = "ops@provider.example"


class PostmasterTests(unittest.TestCase):
    def session(self, postmaster=OPERATOR, mailboxes=(OPERATOR, "postmaster@own.example")):
        self.directory = FakeDirectory(["example.com", "own.example", "provider.example"], mailboxes)
        self.queue = FakeQueue()
        factory = MXFactory(
            directory=self.directory,
            queue=self.queue,
            clock=Clock(),
            hostname="mx.test",
            tls_options=object(),
            postmaster=postmaster,
        )
        self.server = factory.buildProtocol(None)
        self.transport = TLSStringTransport()
        self.server.makeConnection(self.transport)
        self.server.dataReceived(b"EHLO remote.test\r\nMAIL FROM:<someone@remote.test>\r\n")
        replies(self.transport)

    def rcpt(self, path):
        self.server.dataReceived(b"RCPT TO:" + path + b"\r\n")
        return replies(self.transport)[-1][:9]

    def send(self):
        self.server.dataReceived(b"DATA\r\nSubject: abuse report\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(replies(self.transport)[-1][:9], "250 2.0.0")
        return self.queue.messages[-1][0].recipients

    def test_postmaster_of_every_hosted_domain(self):
        self.session()
        self.assertEqual(self.rcpt(b"<postmaster@example.com>"), "250 2.1.5")
        self.assertEqual(self.rcpt(b"<PostMaster@EXAMPLE.com>"), "250 2.1.5")
        self.assertEqual(self.rcpt(b"<postmaster@own.example>"), "250 2.1.5")
        self.assertEqual(self.send(), (OPERATOR, "postmaster@own.example"))

    def test_only_hosted_domains(self):
        self.session()
        self.assertEqual(self.rcpt(b"<postmaster@elsewhere.test>"), "550 5.7.1")
        self.assertEqual(self.rcpt(b"<postmasters@example.com>"), "550 5.1.1")

    def test_unset_or_not_a_mailbox(self):
        self.session(postmaster="")
        self.assertEqual(self.rcpt(b"<postmaster@example.com>"), "550 5.1.1")
        self.session(postmaster="nobody@provider.example")
        self.assertEqual(self.rcpt(b"<postmaster@example.com>"), "550 5.1.1")
        self.flushLoggedErrors()

    def test_directory_unavailable(self):
        self.session(mailboxes=())
        self.directory.unavailable = True
        self.assertEqual(self.rcpt(b"<postmaster@example.com>"), "451 4.4.3")


class ConfigTests(unittest.TestCase):
    def test_key_reaches_the_listener(self):
        path = write_config(self.mktemp(), extra="[mx]\npostmaster = Ops@Provider.example\n", mx="tcp:10025")
        components = Components(Config.from_file(path), MemoryReactorClock())
        self.addCleanup(components.database.db.close)
        self.assertEqual(mx_service(components, FakeQueue()).factory.wrappedFactory.postmaster, OPERATOR)

    def test_not_an_address(self):
        self.assertRaises(ConfigError, Config.from_text, "[mx]\npostmaster = ops\n")
        self.assertEqual(Config.defaults().get("mx", "postmaster"), "")
