"""
The queue sends a domain's mail through its SMTP profile: a message
enqueued from a domain routed to a profile reaches the provider stand-in
over verified STARTTLS with AUTH, DKIM-signed, and a provider that
refuses the credentials turns into a bounce that says what to fix.
"""

import os

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.provider import Provider
from tests.sending_site import CA, Site
from trekmail.mailstore import maildir_path
from trekmail.queue.interface import Envelope
from trekmail.realm.directory import SqliteDirectory
from trekmail.service import build_queue

MESSAGE = b"From: alice@example.com\r\nTo: bob@remote.example\r\nSubject: via provider\r\n\r\nhello\r\n"


class QueueThroughProfileTests(unittest.TestCase):
    @inlineCallbacks
    def start(self, password):
        self.site = Site(self)
        self.provider = Provider(CA, mode="starttls")
        port = yield self.provider.listen(reactor)
        self.addCleanup(self.provider.stop)
        account = yield self.site.call("account_add", owner_email="owner@example.net", plan="nano", verified=True)
        yield self.site.call("domain_add", name="example.com", account_id=account["id"])
        yield self.site.call("mailbox_add", address="alice@example.com", password="strong password")
        yield self.site.call("route_new", domain="example.com", name="sg", host="127.0.0.1", port=port,
                             tls="starttls", username="apikey", password=password)
        service = build_queue(self.site.config, reactor, self.site.database, SqliteDirectory(self.site.database),
                              keyring=self.site.keyring, smarthost=self.site.smarthost)
        yield service.startService()
        self.addCleanup(service.stopService)
        yield service.queue.enqueue(Envelope("alice@example.com", ("bob@remote.example",), "submission",
                                             authenticated_as="alice@example.com"), MESSAGE)

    @inlineCallbacks
    def wait_for(self, condition):
        for _ in range(200):
            if condition():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail("timed out")

    @inlineCallbacks
    def test_nano_domain_sends_through_its_profile(self):
        yield self.start("SG.secret-key")
        yield self.wait_for(lambda: self.provider.messages)
        self.assertEqual(self.provider.recipients, ["bob@remote.example"])
        self.assertEqual(self.provider.seen_credentials, [(b"apikey", b"SG.secret-key")])
        self.assertIn(b"DKIM-Signature", self.provider.messages[0])

    @inlineCallbacks
    def test_bad_credentials_bounce_with_an_explanation(self):
        yield self.start("wrong")
        inbox = os.path.join(maildir_path(self.site.config.data_dir, "alice@example.com"), "new")

        def reports():
            return os.listdir(inbox) if os.path.isdir(inbox) else []

        yield self.wait_for(reports)
        with open(os.path.join(inbox, reports()[0]), "rb") as f:
            report = f.read()
        self.assertIn(b"refused the profile's credentials", report.replace(b"\r\n ", b" ").replace(b"\n ", b" "))
        self.assertEqual(self.provider.messages, [])
        self.assertEqual(len(self.provider.seen_credentials), 1)
