"""
Several sessions on one mailbox, and delivery beside them: new mail shows
up in IDLE and NOOP, flag changes and expunges reach the other sessions,
and UIDs survive a restart of the store.
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import Site, message
from tests.support import wait_until
from tests.test_imap_session import raw
from trekmail.imap import store
from trekmail.mailstore import maildir_path


def read_until(client, needle):
    lines = []
    while True:
        line = client.readline()
        if not line:
            raise AssertionError("connection closed; got %r" % (lines,))
        lines.append(line.rstrip(b"\r\n"))
        if needle in line:
            return lines


class SharingTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()

    @defer.inlineCallbacks
    def test_delivery_reaches_idle_and_noop(self):
        site = self.site
        site.deliver("alice@example.com", message("before"))

        def work():
            idler, poller = site.connect(), site.connect()
            idler.select("INBOX")
            poller.select("INBOX")
            tag = idler._new_tag()
            idler.send(tag + b" IDLE\r\n")
            started = idler.readline()
            site.deliver("alice@example.com", message("during idle"))
            seen_in_idle = read_until(idler, b"EXISTS")
            idler.send(b"DONE\r\n")
            done = read_until(idler, tag)
            noop = raw(poller, b"NOOP")
            fetched = poller.fetch("2", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            idler.logout()
            poller.logout()
            return started, seen_in_idle, done, noop, fetched

        started, seen_in_idle, done, noop, fetched = yield site.in_thread(work)
        self.assertTrue(started.startswith(b"+"))
        self.assertIn(b"* 2 EXISTS", seen_in_idle)
        self.assertIn(b"OK", done[-1])
        self.assertIn(b"* 2 EXISTS", noop[0])
        self.assertIn(b"UID 2", fetched[1][0][0])
        self.assertEqual(fetched[1][0][1], b"Subject: during idle\r\n\r\n")

    @defer.inlineCallbacks
    def test_flag_changes_and_expunges_reach_other_sessions(self):
        site = self.site

        def work():
            a, b = site.connect(), site.connect()
            for i in range(3):
                a.append("INBOX", None, None, message("m%d" % i))
            a.select("INBOX")
            b.select("INBOX")
            a.store("2", "+FLAGS", "(\\Flagged)")
            flags = raw(b, b"NOOP")
            a.store("1", "+FLAGS", "(\\Deleted)")
            a.expunge()
            during_fetch = raw(b, b"FETCH 1:* (FLAGS)")
            after = raw(b, b"NOOP")
            left = b.fetch("1:*", "(UID)")
            a.logout()
            b.logout()
            return flags, during_fetch, after, left

        flags, during_fetch, after, left = yield site.in_thread(work)
        self.assertIn(b"* 2 FETCH (UID 2 FLAGS (\\Flagged))", flags[0])
        self.assertEqual(len(during_fetch[0]), 3, "no EXPUNGE during FETCH (RFC 3501 7.4.1)")
        self.assertEqual(after[0], [b"* 1 EXPUNGE"])
        self.assertEqual(left[1], [b"1 (UID 2)", b"2 (UID 3)"])

    @defer.inlineCallbacks
    def test_uids_survive_restart(self):
        site = self.site
        site.deliver("alice@example.com", message("delivered"))

        def first():
            client = site.connect()
            client.append("INBOX", None, None, message("appended"))
            client.select("INBOX")
            client.store("1", "+FLAGS", "(\\Deleted)")
            client.expunge()
            before = client.fetch("1:*", "(UID FLAGS)"), client.status("INBOX", "(UIDVALIDITY UIDNEXT)")
            client.logout()
            return before

        before = yield site.in_thread(first)
        yield site.store.stop()
        site.store = store.MailStore(site.config.data_dir, site.store._reactor)
        for factory in site.factories.values():
            factory.store = site.store
        site.store.start()
        self.addCleanup(site.store.stop)
        site.deliver("alice@example.com", message("after restart"))

        def second():
            client = site.connect()
            status = client.status("INBOX", "(UIDVALIDITY UIDNEXT)")
            client.select("INBOX")
            after = client.fetch("1:*", "(UID)")
            client.logout()
            return after, status

        after, status = yield site.in_thread(second)
        self.assertEqual(before[0][1], [b"1 (UID 2 FLAGS (\\Recent))"])
        self.assertEqual(after[1], [b"1 (UID 2)", b"2 (UID 3)"])
        validity = before[1][1][0].split(b"UIDVALIDITY ")[1].split(b" ")[0]
        self.assertIn(b"UIDVALIDITY " + validity, status[1][0])
        self.assertIn(b"UIDNEXT 4", status[1][0])

    @defer.inlineCallbacks
    def test_expunged_message_stays_readable_until_told(self):
        site = self.site

        def work():
            a, b = site.connect(), site.connect()
            a.append("INBOX", None, None, message("doomed", body="still here\r\n"))
            a.select("INBOX")
            b.select("INBOX")
            a.store("1", "+FLAGS", "(\\Deleted)")
            a.expunge()
            body = raw(b, b"FETCH 1 (BODY.PEEK[TEXT])")
            b.noop()
            a.logout()
            b.logout()
            return body

        body = yield site.in_thread(work)
        self.assertIn(b"{12}", body[0][0])
        root = maildir_path(site.config.data_dir, "alice@example.com")
        yield wait_until(lambda: not os.listdir(os.path.join(root, "tmp")))
        self.assertEqual(os.listdir(os.path.join(root, "cur")), [])
