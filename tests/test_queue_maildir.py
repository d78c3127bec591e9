"""
Local delivery into Maildir: tmp/ then new/, one copy per recipient,
batched deliveries, and a failure that affects only its own copy.
"""

import os

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from tests.delivery_support import delivered
from trekmail.mailstore import maildir_path
from trekmail.queue.maildir import MaildirWriter, deliver_batch
from trekmail.workerthreads import WorkerThreads


class DeliverBatchTests(unittest.TestCase):
    def test_copies_land_in_new_with_headers(self):
        root = self.mktemp()
        items = [("a@example.com", "s@x.test", b"one\r\n"), ("b@example.com", "", b"two\r\n"),
                 ("a@example.com", "s@x.test", b"three\r\n")]
        syncers = WorkerThreads(reactor, 4, "test-fsync")
        syncers.start()
        self.addCleanup(syncers.stop)
        self.assertEqual(deliver_batch(root, "mail.test", items, Clock().seconds, syncers), [None, None, None])
        self.assertEqual(sorted(delivered(root, "a@example.com")), [
            b"Return-Path: <s@x.test>\r\nDelivered-To: a@example.com\r\none\r\n",
            b"Return-Path: <s@x.test>\r\nDelivered-To: a@example.com\r\nthree\r\n",
        ])
        self.assertEqual(delivered(root, "b@example.com"), [b"Return-Path: <>\r\nDelivered-To: b@example.com\r\ntwo\r\n"])
        for address in ("a@example.com", "b@example.com"):
            self.assertEqual(os.listdir(os.path.join(maildir_path(root, address), "tmp")), [])
            self.assertTrue(os.path.isdir(os.path.join(maildir_path(root, address), "cur")))

    def test_failure_is_per_copy(self):
        root = self.mktemp()
        blocked = maildir_path(root, "full@example.com")
        os.makedirs(os.path.dirname(blocked))
        with open(blocked, "w"):
            pass
        results = deliver_batch(root, "mail.test", [("full@example.com", "", b"x\r\n"), ("ok@example.com", "", b"y\r\n")],
                                Clock().seconds)
        self.assertIsInstance(results[0], OSError)
        self.assertIsNone(results[1])


class MaildirWriterTests(unittest.TestCase):
    @inlineCallbacks
    def test_concurrent_deliveries_over_threads(self):
        root = self.mktemp()
        syncers = WorkerThreads(reactor, 4, "test-fsync")
        syncers.start()
        self.addCleanup(syncers.stop)
        writer = MaildirWriter(root, "mail.test", reactor, syncers=syncers)
        writer.start()
        self.addCleanup(writer.stop)
        results = yield gatherResults([
            writer.deliver("s@x.test", b"m%d\r\n" % i, ["a@example.com", "b@example.com"]) for i in range(50)
        ])
        self.assertEqual(results, [{"a@example.com": None, "b@example.com": None}] * 50)
        self.assertEqual(len(delivered(root, "a@example.com")), 50)
        self.assertEqual(len(delivered(root, "b@example.com")), 50)
