"""
The inbound MX: hosted recipients only, every unusual address form
refused, STARTTLS with the discard rule, over a StringTransport and then
end to end with smtplib and a real sqlite directory.
"""

import smtplib

from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from tests import support
from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from tests.smtp_site import client_context
from trekmail import settings
from trekmail.realm import database
from trekmail.realm.directory import SqliteDirectory
from trekmail.smtp.mx import MAX_RECIPIENTS, MXFactory


def session(directory):
    queue = FakeQueue()
    server = MXFactory(directory=directory, queue=queue, clock=Clock(), hostname="mx.test", tls_options=object()).buildProtocol(None)
    transport = TLSStringTransport()
    server.makeConnection(transport)
    server.dataReceived(b"EHLO remote.test\r\nMAIL FROM:<someone@remote.test>\r\n")
    replies(transport)
    return server, transport, queue


class RecipientTests(unittest.TestCase):
    def setUp(self):
        self.directory = FakeDirectory(["example.com"], ["bob@example.com"])
        self.server, self.transport, self.queue = session(self.directory)

    def rcpt(self, path):
        self.server.dataReceived(b"RCPT TO:" + path + b"\r\n")
        return replies(self.transport)[-1]

    def test_hosted_mailbox(self):
        self.assertEqual(self.rcpt(b"<Bob@EXAMPLE.com>")[:9], "250 2.1.5")

    def test_unknown_local_user(self):
        self.assertEqual(self.rcpt(b"<nobody@example.com>")[:9], "550 5.1.1")

    def test_relay_refused(self):
        self.assertEqual(self.rcpt(b"<bob@elsewhere.test>")[:9], "550 5.7.1")

    def test_unusual_forms_refused(self):
        for path in [
            b"<bob%elsewhere.test@example.com>",
            b'<"bob@elsewhere.test"@example.com>',
            b'<"bob"@example.com>',
            b"<@example.com:bob@elsewhere.test>",
            b"<@a.test,@b.test:bob@example.com>",
            b"<elsewhere.test!bob@example.com>",
            b"<bob@elsewhere.test@[127.0.0.1]>",
            b"<bob@example.com@elsewhere.test>",
            b"<bob@[127.0.0.1]>",
            b"<bob\\@x@example.com>",
            b"<>",
        ]:
            self.assertEqual(self.rcpt(path)[:9], "550 5.7.1", path)

    def test_syntax_errors(self):
        self.assertEqual(self.rcpt(b"bob@example.com")[:9], "501 5.5.4")
        self.assertEqual(self.rcpt(b"<bob@example.com")[:9], "501 5.5.4")
        self.assertEqual(self.rcpt(b"<bob@example.com> NOTIFY=NEVER")[:9], "555 5.5.4")

    def test_directory_unavailable(self):
        self.directory.unavailable = True
        self.assertEqual(self.rcpt(b"<bob@example.com>")[:9], "451 4.4.3")

    def test_recipient_cap(self):
        self.server.dataReceived(b"RCPT TO:<bob@example.com>\r\n" * (MAX_RECIPIENTS + 1))
        lines = replies(self.transport)
        self.assertEqual(len(lines), MAX_RECIPIENTS + 1)
        self.assertEqual(lines[-1][:9], "452 4.5.3")

    def test_no_auth_on_mx(self):
        self.server.dataReceived(b"AUTH PLAIN AGJvYkBleGFtcGxlLmNvbQB4\r\n")
        self.assertEqual(replies(self.transport)[-1][:9], "502 5.5.1")

    def test_message_queued_with_envelope(self):
        self.rcpt(b"<bob@example.com>")
        self.server.dataReceived(b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(replies(self.transport)[-1][:9], "250 2.0.0")
        envelope, message = self.queue.messages[0]
        self.assertEqual((envelope.sender, envelope.recipients, envelope.origin, envelope.authenticated_as),
                         ("someone@remote.test", ("bob@example.com",), "mx", None))
        self.assertEqual(message, b"Subject: hi\r\n\r\nbody\r\n")


class EndToEndTests(unittest.TestCase):
    def setUp(self):
        config, admin, _ = support.realm(self)
        support.example(admin)
        db = database.connect(config.database_path)
        self.database = database.ThreadedDatabase(db, reactor)
        self.database.start()
        self.addCleanup(self.database.stop)
        self.queue = FakeQueue()
        factory = MXFactory(
            directory=SqliteDirectory(self.database),
            queue=self.queue,
            clock=reactor,
            hostname="mx.test",
            tls_options=settings.tls_options(config),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.clients = ThreadPool(minthreads=0, maxthreads=4, name="mx-test-clients")
        self.clients.start()
        self.addCleanup(self.clients.stop)

    @defer.inlineCallbacks
    def test_starttls_and_delivery(self):
        def run():
            client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
            client.ehlo("remote.test")
            offered = client.has_extn("starttls"), client.has_extn("auth")
            client.starttls(context=client_context())
            refused = client.sendmail("x@remote.test", ["alice@example.com", "nobody@example.com"],
                                      b"Subject: hi\r\n\r\nhello\r\n")
            try:
                client.sendmail("x@remote.test", ["someone@elsewhere.test"], b"x\r\n")
            except smtplib.SMTPRecipientsRefused as e:
                relay = e.recipients
            client.quit()
            return offered, refused, relay

        offered, refused, relay = yield threads.deferToThreadPool(reactor, self.clients, run)
        self.assertEqual(offered, (True, False))
        self.assertEqual(refused["nobody@example.com"][0], 550)
        self.assertTrue(refused["nobody@example.com"][1].startswith(b"5.1.1"))
        self.assertEqual(relay["someone@elsewhere.test"][0], 550)
        self.assertTrue(relay["someone@elsewhere.test"][1].startswith(b"5.7.1"))
        envelope, message = self.queue.messages[0]
        self.assertEqual(envelope.recipients, ("alice@example.com",))
        self.assertEqual(message, b"Subject: hi\r\n\r\nhello\r\n")
