"""
The spool: durable entries, group commit, torn entries quarantined at
recovery and at delivery, write errors reported as SpoolError.
"""

import os
from concurrent.futures import ThreadPoolExecutor

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from tests.delivery_support import SyncPool, SyncReactor
from trekmail.queue import spool as spool_module
from trekmail.queue.interface import Envelope, SpoolError
from trekmail.queue.spool import Spool, SpoolLayout, TornEntry, decode, encode, recover

ENVELOPE = Envelope("a@example.com", ("b@remote.test", "c@remote.test"), "submission",
                    authenticated_as="a@example.com", received_at=100.0)
MESSAGE = b"Subject: hi\r\n\r\n.\r\nbody\r\n"


class FormatTests(unittest.TestCase):
    def test_round_trip(self):
        self.assertEqual(decode(encode(ENVELOPE, MESSAGE)), (ENVELOPE, MESSAGE))

    def test_every_truncation_is_torn(self):
        blob = encode(ENVELOPE, MESSAGE)
        for length in range(len(blob)):
            self.assertRaises(TornEntry, decode, blob[:length])

    def test_flipped_byte_is_torn(self):
        blob = bytearray(encode(ENVELOPE, MESSAGE))
        blob[-20] ^= 0x20
        self.assertRaises(TornEntry, decode, bytes(blob))


class SpoolTests(unittest.TestCase):
    def setUp(self):
        self.layout = SpoolLayout(self.mktemp())
        self.clock = Clock()
        self.spool = Spool(self.layout, SyncReactor(self.clock), SyncPool(), writer=SyncPool())
        self.spool.start()

    def test_store_is_durable_and_readable(self):
        ids = []
        self.spool.store("0001", ENVELOPE, MESSAGE).addCallback(ids.append)
        self.assertEqual(ids, ["0001"])
        self.assertEqual(os.listdir(self.layout.tmp), [])
        read = []
        self.spool.read("0001").addCallback(read.append)
        self.assertEqual(read, [(ENVELOPE, MESSAGE)])

    def test_write_error_is_spool_error(self):
        os.rmdir(self.layout.tmp)
        with open(self.layout.tmp, "w"):
            pass
        failures = []
        self.spool.store("0002", ENVELOPE, MESSAGE).addErrback(failures.append)
        self.assertEqual(len(failures), 1)
        failures[0].trap(SpoolError)
        self.assertEqual(os.listdir(self.layout.msg), [])

    def test_recovery_quarantines_torn_and_unfinished(self):
        self.spool.store("0003", ENVELOPE, MESSAGE)
        self.spool.store("0004", ENVELOPE, MESSAGE)
        path = self.layout.message_path("0004")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 3)
        with open(os.path.join(self.layout.tmp, "0005"), "wb") as f:
            f.write(encode(ENVELOPE, MESSAGE)[:10])
        entries = recover(self.layout)
        self.assertEqual([e[0] for e in entries], ["0003"])
        self.assertEqual(
            sorted(n for n in os.listdir(self.layout.quarantine) if not n.endswith(".reason")),
            ["0004", "0005"],
        )

    def test_torn_body_found_at_delivery_is_quarantined(self):
        """Recovery reads only headers; a body corrupted in place is caught by the checksum."""
        self.spool.store("0006", ENVELOPE, MESSAGE)
        path = self.layout.message_path("0006")
        with open(path, "r+b") as f:
            f.seek(-25, os.SEEK_END)
            f.write(b"X")
        self.assertEqual([e[0] for e in recover(self.layout)], ["0006"])
        failures = []
        self.spool.read("0006").addErrback(failures.append)
        failures[0].trap(TornEntry)
        self.assertIn("0006", os.listdir(self.layout.quarantine))


class GroupCommitTests(unittest.TestCase):
    """Over real threads: concurrent stores share fsync batches."""

    @inlineCallbacks
    def test_concurrent_stores_share_batches(self):
        layout = SpoolLayout(self.mktemp())
        workers = ThreadPool(1, 2)
        syncers = ThreadPoolExecutor(4)
        self.addCleanup(syncers.shutdown)
        spool = Spool(layout, reactor, workers, syncers=syncers)
        workers.start()
        spool.start()
        self.addCleanup(workers.stop)
        self.addCleanup(spool.stop)
        batches = []
        original = spool_module.write_batch

        def counting(layout, batch, syncers):
            batches.append(len(batch))
            return original(layout, batch, syncers)

        self.patch(spool_module, "write_batch", counting)
        ids = yield gatherResults([
            spool.store("%04d" % i, ENVELOPE, MESSAGE + b"%d\r\n" % i) for i in range(200)
        ])
        self.assertEqual(len(ids), 200)
        self.assertEqual(sum(batches), 200)
        self.assertLess(len(batches), 200)
        self.assertEqual(layout.queue_ids(), sorted(ids))
