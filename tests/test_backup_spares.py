"""
A backup beside spare-file APPENDs (trekmail.imap.spares): an expunged
message's file waits in C{tmp/} where an APPEND may rewrite it in place,
so a backup never takes it from there, and a file copied by its name is
kept only if that name still held it when the copy was done.  What the
backup holds under a message's name is that message.
"""

import os
import shutil
import sqlite3

from twisted.trial import unittest

from trekmail.admin import backup
from trekmail.imap import index, spares

NAME = "1000.M1P1.host:2,"
ORIGINAL = b"Subject: the expunged one\r\n\r\nbody\r\n"
OTHER = b"Subject: another message, APPENDed into the spare\r\n\r\n"


class SpareRaceTests(unittest.TestCase):
    def setUp(self):
        self.data = self.mktemp()
        self.root = os.path.join(self.data, "mail", "example.com", "alice")
        db = index.open_index(self.root, 1e9)
        with db:
            db.execute("INSERT INTO messages VALUES ('INBOX', 1, ?, '', 1, ?, 1000000000, NULL)", (NAME, len(ORIGINAL)))
        db.close()
        with open(os.path.join(self.root, "cur", NAME), "wb") as f:
            f.write(ORIGINAL)
        self.layout = backup.Layout(data_dir=self.data, database=os.path.join(self.data, "realm.sqlite"), keys={})
        self.target = self.mktemp()
        self.rewritten = os.path.join(self.root, "tmp", "1001.M2P1.host:2,")

    def expunge(self):
        """The message moves to C{tmp/} as a spare, and an APPEND has just reopened it to write over it."""
        parked = os.path.join(self.root, "tmp", NAME)
        os.rename(os.path.join(self.root, "cur", NAME), parked)
        fd = spares.reopen(parked, self.rewritten)
        self.assertIsNotNone(fd)
        self.addCleanup(os.close, fd)
        return fd

    def saved(self):
        """What the backup's index names, with the bytes the backup holds for each."""
        saved_root = os.path.join(self.target, "data", os.path.relpath(self.root, self.data))
        db = sqlite3.connect(os.path.join(saved_root, index.INDEX_NAME))
        try:
            names = [n for (n,) in db.execute("SELECT filename FROM messages")]
        finally:
            db.close()
        out = {}
        for name in names:
            with open(os.path.join(saved_root, "cur", name), "rb") as f:
                out[name] = f.read()
        return out

    def test_an_expunged_file_is_not_taken_from_tmp(self):
        real_snapshot = backup._snapshot
        appending = []

        def snapshot_then_expunge(source, target):
            real_snapshot(source, target)
            if source.endswith(index.INDEX_NAME):
                appending.append(self.expunge())
        self.patch(backup, "_snapshot", snapshot_then_expunge)
        summary = backup.backup(self.layout, self.target)
        os.write(appending[0], OTHER)
        self.assertEqual(self.saved(), {})
        self.assertEqual(summary["dropped_expunged"], 1)

    def test_a_copy_made_while_the_file_became_a_spare_is_dropped(self):
        self.patch(backup, "_same_device", lambda a, b: False)
        real_copyfile = shutil.copyfile

        def expunged_mid_copy(source, target, **kwargs):
            if source.endswith(NAME):
                fd = self.expunge()
                os.write(fd, OTHER)
                return real_copyfile(self.rewritten, target, **kwargs)
            return real_copyfile(source, target, **kwargs)
        self.patch(shutil, "copyfile", expunged_mid_copy)
        backup.backup(self.layout, self.target)
        self.assertEqual(self.saved(), {})

    def test_a_message_kept_by_its_name_is_in_the_backup(self):
        for same_device in (True, False):
            self.patch(backup, "_same_device", lambda a, b: same_device)
            target = self.target = self.mktemp()
            backup.backup(self.layout, target)
            self.assertEqual(self.saved(), {NAME: ORIGINAL})
