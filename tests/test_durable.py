"""The one tmp-write-fsync-rename sequence of L{trekmail.durable}, and the batch's one fsync per directory."""

import os
import stat

from twisted.trial import unittest

from trekmail import durable


class DurableTests(unittest.TestCase):
    def setUp(self):
        self.root = self.mktemp()
        for sub in ("tmp", "a", "b"):
            os.makedirs(os.path.join(self.root, sub))
        self.synced = []
        self.patch(durable, "fsync_directory", self.synced.append)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def test_written_file_has_its_mode_and_mtime(self):
        durable.write_file(self.path("tmp", "x"), b"ab", b"c", mode=0o640, mtime=1700000000)
        info = os.stat(self.path("tmp", "x"))
        self.assertEqual((stat.S_IMODE(info.st_mode) & 0o640, int(info.st_mtime)), (0o640, 1700000000))
        with open(self.path("tmp", "x"), "rb") as f:
            self.assertEqual(f.read(), b"abc")

    def test_existing_file_is_refused_unless_replaced(self):
        durable.write_file(self.path("tmp", "x"), b"old")
        self.assertRaises(FileExistsError, durable.write_file, self.path("tmp", "x"), b"new")
        durable.write_file(self.path("tmp", "x"), b"new", replace=True)
        with open(self.path("tmp", "x"), "rb") as f:
            self.assertEqual(f.read(), b"new")

    def test_failed_write_leaves_no_file(self):
        def full(fd, data):
            raise OSError(28, "No space left on device")

        self.patch(os, "write", full)
        self.assertRaises(OSError, durable.write_file, self.path("tmp", "x"), b"data")
        self.assertEqual(os.listdir(self.path("tmp")), [])

    def test_batch_fsyncs_each_directory_once(self):
        moves = []
        for name, target in (("1", "a"), ("2", "a"), ("3", "b")):
            durable.write_file(self.path("tmp", name), b"x")
            moves.append((self.path("tmp", name), self.path(target, name)))
        moves.append((self.path("tmp", "gone"), self.path("a", "gone")))
        results = durable.publish_batch(moves)
        self.assertEqual(results[:3], [None, None, None])
        self.assertIsInstance(results[3], FileNotFoundError)
        self.assertEqual(sorted(self.synced), [self.path("a"), self.path("b")])
        self.assertEqual(sorted(os.listdir(self.path("a"))), ["1", "2"])

    def test_failed_directory_fsync_fails_its_moves(self):
        def failing(path):
            if path == self.path("b"):
                raise OSError(5, "I/O error")

        self.patch(durable, "fsync_directory", failing)
        for name in ("1", "2"):
            durable.write_file(self.path("tmp", name), b"x")
        results = durable.publish_batch([(self.path("tmp", "1"), self.path("a", "1")),
                                         (self.path("tmp", "2"), self.path("b", "2"))])
        self.assertIsNone(results[0])
        self.assertIsInstance(results[1], OSError)

    def test_replace_private_publishes(self):
        target = self.path("keys", "k")
        durable.replace_private(target, b"secret")
        durable.replace_private(target, b"rotated")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"rotated")
        self.assertEqual(stat.S_IMODE(os.stat(target).st_mode), 0o600)
        self.assertEqual(self.synced, [self.path("keys")] * 2)
        self.assertEqual(os.listdir(self.path("keys")), ["k"])
