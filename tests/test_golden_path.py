"""
The golden path, built by L{trekmail.service.make_service} exactly as
C{twistd trekmail} builds it, on real sockets on 127.0.0.1: a message
submitted on 587 (STARTTLS, AUTH) reaches an IDLEing IMAP session as
EXISTS and FETCHes back as sent; a message to a remote domain leaves
DKIM-signed for a sink found through a DNS server the test runs, and the
signature verifies against the key that DNS publishes.
"""

import imaplib
import smtplib

import dkim
from twisted.internet import defer, reactor, task, threads
from twisted.names import dns
from twisted.trial import unittest

from tests import support
from tests.delivery_support import Sink, dns_server, remote_test_zone, txt_record
from tests.server_process import free_port
from trekmail.config import Config
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail.realm.dkimkeys import txt_value
from trekmail.service import make_service
from trekmail import settings

PASSWORD = "golden path password"
TRACE_FIELDS = (b"received:", b"return-path:", b"delivered-to:")
"""Fields a hop may prepend; everything after them is the message as submitted."""


def _without_trace(message):
    """C{message} without the trace fields a hop prepended (each with its folded lines)."""
    lines = message.split(b"\r\n")
    index = 0
    while index < len(lines) and lines[index].lower().startswith(TRACE_FIELDS):
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            index += 1
    return b"\r\n".join(lines[index:])


class GoldenPathTests(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        sink_port = self.sink.listen(self)
        self.zone = remote_test_zone()
        dns_port = dns_server(self, self.zone)
        self.ports = {name: free_port() for name in ("submission", "imaps")}
        path = support.write_config(self.mktemp(), (
            "[relay]\nmx_port = %d\n[dns]\nnameservers = 127.0.0.1:%d\n" % (sink_port, dns_port)
        ), **{name: "tcp:%d:interface=127.0.0.1" % port for name, port in self.ports.items()})
        config = Config.from_file(path)
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        admin = Administration(db, settings.realm(config), task.Clock())
        admin.clock.advance(reactor.seconds())
        account = admin.account_add("owner@example.net", "starter", verified=True)
        domain = admin.domain_add("example.com", account.id)
        admin.mailbox_add("alice@example.com", PASSWORD)
        admin.mailbox_add("bob@example.com", PASSWORD)
        db.close()
        self.zone.records[("dkim._domainkey.example.com", dns.TXT)] = [txt_record(txt_value(domain.dkim_public_key))]
        self.published = txt_value(domain.dkim_public_key).encode("ascii")
        self.server = make_service(config, reactor)
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)

    def submit(self, recipient, message):
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as client:
            client.starttls(context=support.client_context())
            client.login("alice@example.com", PASSWORD)
            client.sendmail("alice@example.com", [recipient], message)

    @defer.inlineCallbacks
    def test_submitted_message_reaches_idle_session_byte_identical(self):
        message = (
            b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: golden\r\n"
            b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <golden-1@example.com>\r\n\r\n"
            b"First line.\r\n.leading dot\r\n\r\nLast line.\r\n"
        )

        def idle_then_submit():
            imap = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=support.client_context(),
                                     timeout=30)
            try:
                imap.login("bob@example.com", PASSWORD)
                imap.select("INBOX")
                tag = imap._new_tag()
                imap.send(tag + b" IDLE\r\n")
                continuation = imap.readline()
                self.submit("bob@example.com", message)
                untagged = imap.readline()
                imap.send(b"DONE\r\n")
                while not imap.readline().startswith(tag + b" "):
                    pass
                status, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
                return continuation, untagged, status, data[0][1]
            finally:
                imap.logout()

        continuation, untagged, status, fetched = yield threads.deferToThread(idle_then_submit)
        self.assertTrue(continuation.startswith(b"+ "), continuation)
        self.assertEqual(untagged, b"* 1 EXISTS\r\n")
        self.assertEqual(status, "OK")
        self.assertEqual(_without_trace(fetched), message)

    @defer.inlineCallbacks
    def test_remote_message_leaves_dkim_signed(self):
        message = (
            b"From: alice@example.com\r\nTo: carol@remote.test\r\nSubject: signed\r\n"
            b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <golden-2@example.com>\r\n\r\n"
            b"Signed body.\r\n"
        )
        yield threads.deferToThread(self.submit, "carol@remote.test", message)
        [(sender, recipient, data)] = yield self.sink.wait_for(1)
        self.assertEqual(recipient, "carol@remote.test")
        self.assertTrue(data.endswith(b"\r\n\r\nSigned body.\r\n"))
        self.assertIn(b"d=example.com;", data.split(b"\r\n\r\n", 1)[0].replace(b" ", b""))
        self.assertTrue(dkim.verify(data, dnsfunc=lambda name, timeout=5: self.published))
        self.assertFalse(dkim.verify(data.replace(b"Signed body", b"Forged body"),
                                     dnsfunc=lambda name, timeout=5: self.published))
