"""
The per-plan IMAP connection caps of docs/sending-rules.md, shown with connections from
several 127.0.0.x source addresses over real TLS.
"""

import imaplib

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.imap_site import Site
from tests.support import capture
from trekmail.plans import plan_named


def refused(site, source):
    """Logs in from C{source}; returns the error text and whether the server then closed."""
    client = site.connect_from(source, login=None)
    try:
        client.login("alice@example.com", "correct horse")
    except imaplib.IMAP4.error as e:
        try:
            closed = client.readline() == b""
        except OSError:
            closed = True
        return str(e), closed
    client.logout()
    return None, False


class ConnectionCapTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.site = Site(self)
        self.site.account(plan="nano")
        self.plan = plan_named("nano")

    def open_many(self, source, count):
        return [self.site.connect_from(source) for _ in range(count)]

    @defer.inlineCallbacks
    def test_per_address_cap(self):
        site = self.site
        held = yield site.in_thread(self.open_many, "127.0.0.2", self.plan.imap_per_ip)
        events = capture(self)
        error, closed = yield site.in_thread(refused, site, "127.0.0.2")
        self.assertIn("Maximum connections exceeded", error)
        self.assertTrue(closed)
        self.assertEqual([(e["client_address"], e["code"], e["reason"]) for e in events if e["log_trekmail"] == "refused"],
                         [("127.0.0.2", "NO [LIMIT]", "plan")])
        other, _ = yield site.in_thread(refused, site, "127.0.0.3")
        self.assertIsNone(other, "another address still gets in")
        before = self.logged_in()
        yield site.in_thread(held.pop().logout)
        yield self.slot_freed(before)
        again, _ = yield site.in_thread(refused, site, "127.0.0.2")
        self.assertIsNone(again, "a closed connection frees its slot at once")
        yield site.in_thread(lambda: [c.logout() for c in held])

    @defer.inlineCallbacks
    def test_total_cap(self):
        site = self.site
        held = yield site.in_thread(self.open_many, "127.0.0.2", self.plan.imap_per_ip)
        held += yield site.in_thread(self.open_many, "127.0.0.3", self.plan.imap_total - self.plan.imap_per_ip)
        error, closed = yield site.in_thread(refused, site, "127.0.0.4")
        self.assertIn("Maximum connections exceeded", error)
        self.assertTrue(closed)
        before = self.logged_in()
        yield site.in_thread(held.pop().shutdown)
        yield self.slot_freed(before)
        again, _ = yield site.in_thread(refused, site, "127.0.0.4")
        self.assertIsNone(again, "an abruptly closed connection frees its slot too")
        yield site.in_thread(lambda: [c.logout() for c in held])

    def logged_in(self):
        return self.site.limits.counts.get(("account", 1), 0)

    def slot_freed(self, before):
        """Waits until the server has seen the close (a client's close does not wait for it)."""
        def check():
            if self.logged_in() < before:
                loop.stop()
        loop = task.LoopingCall(check)
        loop.clock = reactor
        return loop.start(0.01)
