"""
The spool: durable entries, group commit into the accept log, aged mail
moved into files, torn entries quarantined at recovery and at delivery,
write errors reported as SpoolError.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.delivery_support import SyncPool, SyncReactor
from trekmail.queue import acceptlog
from trekmail.queue.interface import Envelope, SpoolError
from trekmail.queue.spool import Spool, accept_log, recover
from trekmail.queue.spoolformat import SpoolLayout, TornEntry, decode, encode
from trekmail.workerthreads import WorkerThreads

ENVELOPE = Envelope("a@example.com", ("b@remote.test", "c@remote.test"), "submission",
                    authenticated_as="a@example.com", received_at=100.0)
MESSAGE = b"Subject: hi\r\n\r\n.\r\nbody\r\n"


def recovered(layout):
    """What recovery at start-up finds, without a running spool."""
    return recover(layout, accept_log(layout, Clock().seconds))


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
        self.clock.advance(1000)
        self.spool = Spool(self.layout, SyncReactor(self.clock), SyncPool(), writer=SyncPool())
        self.spool.start()

    def store(self, queue_id, message=MESSAGE):
        ids = []
        self.spool.store(queue_id, ENVELOPE, message).addCallback(ids.append)
        self.assertEqual(ids, [queue_id])

    def read(self, queue_id):
        read = []
        self.spool.read(queue_id).addCallback(read.append)
        return read[0]

    def segments(self):
        return sorted(os.listdir(self.layout.log))

    def test_store_is_durable_and_readable(self):
        self.store("0001")
        self.assertEqual((os.listdir(self.layout.tmp), os.listdir(self.layout.msg)), ([], []))
        self.assertEqual(len(self.segments()), 1)
        self.assertEqual(self.read("0001"), (ENVELOPE, MESSAGE))
        self.assertEqual(self.layout.queue_ids(), ["0001"])

    def test_write_error_is_spool_error(self):
        os.rmdir(self.layout.log)
        with open(self.layout.log, "w"):
            pass
        failures = []
        self.spool.store("0002", ENVELOPE, MESSAGE).addErrback(failures.append)
        self.assertEqual(len(failures), 1)
        failures[0].trap(SpoolError)
        self.assertEqual(os.listdir(self.layout.msg), [])

    def test_failed_batch_is_cut_off_and_never_delivered(self):
        """A batch answered 4xx must not come back at recovery: the client sends it again."""
        self.store("0010")
        real = os.fdatasync

        def failing(fd):
            raise OSError(5, "I/O error")

        self.patch(os, "fdatasync", failing)
        failures = []
        self.spool.store("0011", ENVELOPE, MESSAGE).addErrback(failures.append)
        failures[0].trap(SpoolError)
        self.patch(os, "fdatasync", real)
        self.store("0012")
        self.assertEqual(len([n for n in self.segments() if n.endswith(".seg")]), 2)
        self.assertEqual([e[0] for e in recovered(self.layout)], ["0010", "0012"])
        self.assertEqual(os.listdir(self.layout.quarantine), [])

    def test_recovery_quarantines_torn_and_unfinished(self):
        self.store("0003")
        self.store("0004")
        [segment] = self.segments()
        path = os.path.join(self.layout.log, segment)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 3)
        with open(os.path.join(self.layout.tmp, "0005"), "wb") as f:
            f.write(encode(ENVELOPE, MESSAGE)[:10])
        entries = recovered(self.layout)
        self.assertEqual([e[0] for e in entries], ["0003"])
        self.assertEqual(
            sorted(n for n in os.listdir(self.layout.quarantine) if not n.endswith(".reason")),
            sorted(["0005", segment.replace(".seg", ".tail")]),
        )
        self.assertEqual(self.segments(), [])
        self.assertEqual(decode(open(self.layout.message_path("0003"), "rb").read()), (ENVELOPE, MESSAGE))

    def test_record_naming_a_path_is_never_written_there(self):
        self.store("0008")
        [segment] = self.segments()
        blob = encode(ENVELOPE, MESSAGE)
        with open(os.path.join(self.layout.log, segment), "ab") as f:
            f.write(acceptlog.record("../../escaped", blob) + blob)
        self.assertEqual([e[0] for e in recovered(self.layout)], ["0008"])
        self.assertFalse(os.path.exists(os.path.join(self.layout.root, "..", "escaped")))
        self.assertEqual(
            sorted(n for n in os.listdir(self.layout.quarantine) if not n.endswith(".reason")),
            [segment.replace(".seg", ".tail")],
        )

    def test_torn_body_found_at_delivery_is_quarantined(self):
        """Recovery reads only headers; a body corrupted in place is caught by the checksum."""
        self.store("0006")
        [segment] = self.segments()
        with open(os.path.join(self.layout.log, segment), "r+b") as f:
            f.seek(-25, os.SEEK_END)
            f.write(b"X")
        failures = []
        self.spool.read("0006").addErrback(failures.append)
        failures[0].trap(TornEntry)
        self.assertIn("0006", os.listdir(self.layout.quarantine))
        self.clock.advance(acceptlog.LOG_SECONDS)
        self.assertEqual(self.scan(), set())
        self.assertEqual((self.segments(), os.listdir(self.layout.msg)), ([], []))

    def test_torn_file_found_at_delivery_is_quarantined(self):
        self.store("0007")
        recovered(self.layout)
        path = self.layout.message_path("0007")
        with open(path, "r+b") as f:
            f.seek(-25, os.SEEK_END)
            f.write(b"X")
        self.assertEqual([e[0] for e in recovered(self.layout)], ["0007"])
        failures = []
        self.spool.read("0007").addErrback(failures.append)
        failures[0].trap(TornEntry)
        self.assertIn("0007", os.listdir(self.layout.quarantine))

    def scan(self):
        scanned = []
        self.spool.scan().addCallback(scanned.append)
        return scanned[0][0]

    def test_delivered_mail_never_gets_a_file(self):
        self.store("0020")
        self.store("0021")
        self.spool.write_state("0021", {"attempts": 1})
        self.spool.remove("0020")
        self.spool.remove("0021")
        self.assertEqual((self.layout.queue_ids(), os.listdir(self.layout.state)), ([], []))
        self.assertEqual(self.scan(), set())
        self.clock.advance(acceptlog.LOG_SECONDS)
        self.store("0022")
        self.assertEqual(self.scan(), {"0022"})
        self.assertEqual(os.listdir(self.layout.msg), [])
        self.assertEqual(len(self.segments()), 1, "the old segment went, the new one stays young")

    def test_aged_mail_moves_into_files_and_stays_readable(self):
        self.store("0030")
        self.store("0031", MESSAGE + b"second\r\n")
        self.spool.write_state("0031", {"attempts": 1})
        self.spool.remove("0030")
        self.clock.advance(acceptlog.LOG_SECONDS - 1)
        self.assertEqual(self.scan(), {"0031"})
        self.assertEqual(os.listdir(self.layout.msg), [])
        self.clock.advance(1)
        self.assertEqual(self.scan(), {"0031"})
        self.assertEqual((os.listdir(self.layout.msg), self.segments()), (["0031"], []))
        self.assertEqual(self.read("0031"), (ENVELOPE, MESSAGE + b"second\r\n"))
        self.assertEqual(self.layout.read_state("0031"), {"attempts": 1})
        self.spool.remove("0031")
        self.assertEqual((self.layout.queue_ids(), os.listdir(self.layout.state)), ([], []))

    def test_deletion_list_outliving_its_segment_goes(self):
        self.store("0042")
        self.store("0043")
        self.spool.remove("0042")
        [segment] = [n for n in self.segments() if n.endswith(".seg")]
        orphan = acceptlog.segment_name(acceptlog.segment_of(segment) - 1) + acceptlog.DELETED
        with open(os.path.join(self.layout.log, orphan), "w") as f:
            f.write("0041\n")
        self.assertEqual(self.scan(), {"0043"})
        self.assertEqual(self.segments(), sorted([segment, segment.replace(".seg", ".del")]))

    def test_removed_while_moving_out_leaves_no_file(self):
        self.store("0040")
        real = self.spool.log._materialize

        def delivered_meanwhile(batch):
            results = real(batch)
            self.spool.remove("0040")
            return results

        self.spool.log._materialize = delivered_meanwhile
        self.clock.advance(acceptlog.LOG_SECONDS)
        self.assertEqual(self.scan(), set())
        self.assertEqual((os.listdir(self.layout.msg), self.segments()), ([], []))

    def test_failed_move_keeps_the_segment(self):
        self.store("0041")
        os.rmdir(self.layout.tmp)
        with open(self.layout.tmp, "w"):
            pass
        self.clock.advance(acceptlog.LOG_SECONDS)
        self.assertEqual(self.scan(), {"0041"})
        self.assertEqual(len(self.segments()), 1)
        self.assertEqual(self.read("0041"), (ENVELOPE, MESSAGE))
        os.unlink(self.layout.tmp)
        self.layout.create()
        self.assertEqual(self.scan(), {"0041"})
        self.assertEqual((os.listdir(self.layout.msg), self.segments()), (["0041"], []))

    def test_recovery_keeps_the_segment_taking_mail(self):
        """Listeners may accept mail before recovery has run."""
        self.store("0050")
        recovered = []
        self.spool.recover().addCallback(recovered.append)
        self.assertEqual(recovered, [[]])
        self.store("0051")
        self.assertEqual(len(self.segments()), 1)
        self.assertEqual(self.layout.queue_ids(), ["0050", "0051"])

    def test_moving_out_holds_a_bounded_group_at_a_time(self):
        large = MESSAGE + b"x" * (2 << 20) + b"\r\n"
        for number in range(3):
            self.store("007%d" % number, large)
        self.assertEqual(len(self.segments()), 1)
        groups = []
        real = self.spool.log._materialize

        def counting(batch):
            groups.append([queue_id for queue_id, _ in batch])
            return real(batch)

        self.spool.log._materialize = counting
        self.patch(acceptlog, "SEGMENT_BYTES", len(large) + 200)
        self.clock.advance(acceptlog.LOG_SECONDS)
        self.assertEqual(self.scan(), {"0070", "0071", "0072"})
        self.assertEqual(groups, [["0070"], ["0071"], ["0072"]])
        self.assertEqual(self.read("0071"), (ENVELOPE, large))

    def test_sealed_segment_goes_once_its_mail_has_left(self):
        self.patch(acceptlog, "SEGMENT_BYTES", 2 * len(encode(ENVELOPE, MESSAGE)))
        for number in range(3):
            self.store("008%d" % number)
        first, second = [n for n in self.segments() if n.endswith(".seg")]
        self.spool.remove("0080")
        self.assertEqual(self.scan(), {"0081", "0082"})
        self.assertIn(first, self.segments())
        self.spool.remove("0081")
        self.assertEqual(self.scan(), {"0082"})
        self.assertEqual(self.segments(), [second])
        self.assertEqual(os.listdir(self.layout.msg), [])

    def test_segments_roll_at_their_size(self):
        self.patch(acceptlog, "SEGMENT_BYTES", 2 * len(encode(ENVELOPE, MESSAGE)))
        for number in range(5):
            self.store("006%d" % number)
        self.assertEqual(len(self.segments()), 3)
        self.assertEqual(self.layout.queue_ids(), ["0060", "0061", "0062", "0063", "0064"])
        self.assertEqual(self.read("0063"), (ENVELOPE, MESSAGE))


class GroupCommitTests(unittest.TestCase):
    """Over real threads: concurrent stores share fsync batches."""

    @inlineCallbacks
    def test_concurrent_stores_share_batches(self):
        batches = []
        original = acceptlog.AcceptLog.append

        def counting(log, batch):
            batches.append(len(batch))
            return original(log, batch)

        self.patch(acceptlog.AcceptLog, "append", counting)
        syncs = []
        real_sync = os.fdatasync

        def counted_sync(fd):
            syncs.append(fd)
            real_sync(fd)

        self.patch(os, "fdatasync", counted_sync)
        layout = SpoolLayout(self.mktemp())
        workers = WorkerThreads(reactor, 2, "test-queue")
        syncers = WorkerThreads(reactor, 4, "test-fsync")
        syncers.start()
        self.addCleanup(syncers.stop)
        spool = Spool(layout, reactor, workers, syncers=syncers)
        workers.start()
        spool.start()
        self.addCleanup(workers.stop)
        self.addCleanup(spool.stop)
        ids = yield gatherResults([
            spool.store("%04d" % i, ENVELOPE, MESSAGE + b"%d\r\n" % i) for i in range(200)
        ])
        self.assertEqual(len(ids), 200)
        self.assertEqual(sum(batches), 200)
        self.assertLess(len(batches), 200)
        self.assertEqual(len(syncs), len(batches))
        self.assertEqual(layout.queue_ids(), sorted(ids))
