"""
C{trekmail backup} and C{restore} on a data directory the test writes,
no server running: how the realm database is copied when its name is
not C{.sqlite}, what a restore over an old data directory does with
the old databases' write-ahead logs, and the Maildir directories a
folder needs even when they are empty.
"""

import os
import shutil
import sqlite3

from twisted.trial import unittest

from trekmail.admin import backup


def _database(path, *rows):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
    db.commit()
    return db


def _rows(path):
    db = sqlite3.connect(path)
    try:
        return sorted(v for (v,) in db.execute("SELECT v FROM t"))
    finally:
        db.close()


class BackupFilesTests(unittest.TestCase):
    def setUp(self):
        self.data = self.mktemp()
        os.makedirs(os.path.join(self.data, "keys"))
        with open(os.path.join(self.data, "keys", "secret"), "wb") as f:
            f.write(b"k")

    def _layout(self, database):
        return backup.Layout(data_dir=self.data, database=database, keys={})

    def test_a_realm_database_not_named_sqlite_is_snapshotted(self):
        path = os.path.join(self.data, "realm.db")
        live = _database(path, "one")
        live.execute("PRAGMA wal_autocheckpoint=0")
        live.execute("INSERT INTO t VALUES ('two')")
        live.commit()
        self.addCleanup(live.close)
        target = self.mktemp()
        backup.backup(self._layout(path), target)
        saved = os.path.join(target, "data")
        self.assertEqual(sorted(os.listdir(saved)), ["keys", "realm.db"])
        self.assertEqual(_rows(os.path.join(saved, "realm.db")), ["one", "two"])

    def _stale_log_restore(self, path, layout):
        live = _database(path, "before")
        live.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        target = self.mktemp()
        backup.backup(layout, target)
        live.execute("PRAGMA wal_autocheckpoint=0")
        live.execute("INSERT INTO t VALUES ('after')")
        live.commit()
        kept = self.mktemp()
        os.makedirs(kept)
        for suffix in ("-wal", "-shm"):
            shutil.copy(path + suffix, os.path.join(kept, suffix))
        live.close()
        for suffix in ("-wal", "-shm"):
            shutil.copy(os.path.join(kept, suffix), path + suffix)
        backup.restore(layout, target, force=True)
        self.assertEqual(_rows(path), ["before"])

    def test_restore_force_drops_a_stale_log_beside_an_index(self):
        os.makedirs(os.path.join(self.data, "mail"))
        path = os.path.join(self.data, "mail", "index.sqlite")
        self._stale_log_restore(path, self._layout(os.path.join(self.data, "realm.sqlite")))

    def test_restore_force_drops_a_stale_log_beside_an_external_database(self):
        path = os.path.join(self.mktemp() + "-db", "realm.sqlite")
        os.makedirs(os.path.dirname(path))
        self._stale_log_restore(path, self._layout(path))

    def test_every_maildir_directory_comes_back_even_empty(self):
        root = os.path.join(self.data, "mail", "example.com", "alice")
        for part in ("cur", "new", "tmp", ".Archive/cur", ".Archive/new", ".Archive/tmp", ".Empty/cur",
                     ".Empty/new", ".Empty/tmp"):
            os.makedirs(os.path.join(root, part))
        for name in ("cur/1.M1P1.host:2,", ".Archive/cur/2.M1P1.host:2,", ".Archive/tmp/3.M1P1.host:2,"):
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"Subject: x\r\n\r\nx\r\n")
        layout = self._layout(os.path.join(self.data, "realm.sqlite"))
        target = self.mktemp()
        backup.backup(layout, target)
        shutil.rmtree(self.data)
        backup.restore(layout, target)
        found = sorted(os.path.relpath(os.path.join(d, n), root)
                       for d, subdirs, files in os.walk(root) for n in subdirs + files)
        self.assertEqual(found, [
            ".Archive", ".Archive/cur", ".Archive/cur/2.M1P1.host:2,", ".Archive/new", ".Archive/tmp",
            ".Empty", ".Empty/cur", ".Empty/new", ".Empty/tmp",
            "cur", "cur/1.M1P1.host:2,", "new", "tmp"])
