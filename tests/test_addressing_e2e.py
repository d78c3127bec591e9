"""
Aliases, catch-all and plus-addressing end to end: the server built by
L{trekmail.service.make_service} as C{twistd trekmail} builds it, mail
sent with smtplib to its MX on 127.0.0.1, and the Maildirs it lands in.
"""

import smtplib

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from tests import support
from tests.delivery_support import delivered
from tests.server_process import free_port
from trekmail import settings
from trekmail.config import Config
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail.service import make_service


def _send(port, recipients, subject):
    """The RCPT replies, and the message sent to the accepted ones."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("remote.test")
        client.mail("someone@remote.test")
        codes = [client.rcpt(r)[0] for r in recipients]
        client.data(b"From: someone@remote.test\r\nSubject: " + subject + b"\r\n\r\nhello\r\n")
    return codes


class AddressingEndToEndTests(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        path = support.write_config(self.mktemp(), support.NO_DNS, mx="tcp:%d:interface=127.0.0.1" % (self.port,))
        config = Config.from_file(path)
        self.data_dir = config.get("server", "data_dir")
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        admin = Administration(db, settings.realm(config), task.Clock())
        account = admin.account_add("owner@example.net", "starter", verified=True)
        admin.domain_add("example.com", account.id)
        for local in ("alice", "bob", "carol"):
            admin.mailbox_add(local + "@example.com", "strong password")
        admin.alias_add("sales@example.com", ["alice@example.com", "bob@example.com"])
        db.close()
        self.config_path = path
        self.server = make_service(config, reactor)
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)

    def catchall(self, mailbox):
        config = Config.from_file(self.config_path)
        db = database.connect(config.database_path)
        try:
            Administration(db, settings.realm(config), task.Clock()).domain_catchall("example.com", mailbox)
        finally:
            db.close()

    def subjects(self, local):
        found = delivered(self.data_dir, local + "@example.com")
        return sorted(line for m in found for line in m.split(b"\r\n") if line.startswith(b"Subject: "))

    @defer.inlineCallbacks
    def test_alias_tag_and_catch_all(self):
        codes = yield threads.deferToThread(
            _send, self.port, ["sales@example.com", "alice+news@example.com", "nobody@example.com"], b"one")
        self.assertEqual(codes, [250, 250, 550])
        self.catchall("carol@example.com")
        codes = yield threads.deferToThread(
            _send, self.port, ["nobody@example.com", "bob@example.com", "sales+x@example.com"], b"two")
        self.assertEqual(codes, [250, 250, 250])
        yield support.wait_until(lambda: len(self.subjects("alice")) == 2 and self.subjects("carol"))
        yield support.wait_until(lambda: len(self.subjects("bob")) == 2)
        self.assertEqual(self.subjects("alice"), [b"Subject: one", b"Subject: two"])
        self.assertEqual(self.subjects("bob"), [b"Subject: one", b"Subject: two"])
        self.assertEqual(self.subjects("carol"), [b"Subject: two"])
