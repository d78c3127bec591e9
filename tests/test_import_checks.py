"""
What an import takes from its source is checked before it reaches the
index: flags a client could not parse back, or would misread (C{\\seen}
as a keyword), and the race between an import's commit and the server's
pick-up of C{new/}.
"""

import os

from twisted.trial import unittest

from tests.support import example, realm
from trekmail.admin import importer, importtarget
from trekmail.admin.importfiles import MboxSource
from trekmail.imap import index
from trekmail.mailstore import maildir_path


class _Source:
    name = "test:source"

    def __init__(self, flags):
        self.flags = flags

    def folders(self):
        return [("INBOX", ["INBOX"], True)]

    def open(self, key):
        return 1

    def messages(self, key, after):
        yield 1, self.flags, 1000000000, [b"Subject: x\r\n\r\nbody\r\n"]

    def close(self):
        pass


class ImportedFlagsTests(unittest.TestCase):
    def setUp(self):
        self.config, admin, _ = realm(self)
        example(admin)
        self.root = maildir_path(self.config.data_dir, "alice@example.com")

    def _flags(self):
        db = index.open_index(self.root, 2e9)
        try:
            _, rows, _ = index.load_folder(db, self.root, "INBOX", 2e9)
            return [r[2].split() for r in rows]
        finally:
            db.close()

    def _import(self, source):
        importer.run(source, self.config.data_dir, "alice@example.com", lambda: 1e9, 10 ** 6)

    def test_system_flags_take_their_proper_form_and_bad_names_are_dropped(self):
        self._import(_Source(["\\seen", "\\FLAGGED", "{25}", "\\Recent", "\\*", "\\Bogus", "a(b", "ok$word", "x\"y"]))
        self.assertEqual(self._flags(), [["\\Flagged", "\\Seen", "ok$word"]])

    def test_keywords_per_message_are_capped(self):
        self._import(_Source(["\\Seen"] + ["k%03d" % i for i in range(500)]))
        [flags] = self._flags()
        self.assertEqual(len(flags), 1 + importtarget.MAX_KEYWORDS)
        self.assertIn("\\Seen", flags)

    def test_mbox_keywords_header_with_a_literal_is_dropped(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"From bob@example.org Mon Jan  1 10:00:00 2001\n"
                    b"Subject: one\nX-Keywords: {25} \\seen Later\n\nbody\n")
        self._import(MboxSource(path))
        self.assertEqual(self._flags(), [["\\Seen", "Later"]])


class _RacingIndex:
    """An index connection on which an import commits and moves its file right after C{arriving} is read."""

    def __init__(self, db, arrive):
        self.db = db
        self.arrive = arrive

    def execute(self, sql, *args):
        cursor = self.db.execute(sql, *args)
        if "FROM arriving" not in sql or self.arrive is None:
            return cursor
        rows = cursor.fetchall()
        self.arrive()
        self.arrive = None
        return _Rows(rows)

    def __getattr__(self, name):
        return getattr(self.db, name)


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return self.rows


class TakeNewRaceTests(unittest.TestCase):
    def test_a_file_arriving_between_the_two_reads_keeps_its_flags(self):
        root = self.mktemp()
        db = index.open_index(root, 1e9)
        self.addCleanup(db.close)
        staged = os.path.join(root, "staged")
        with open(staged, "wb") as f:
            f.write(b"Subject: x\r\n\r\n")

        def arrive():
            with db:
                db.execute("INSERT INTO arriving VALUES (?, ?, ?)", ("INBOX", "1000.M1P1.host", "\\Seen"))
            os.rename(staged, os.path.join(root, "new", "1000.M1P1.host"))

        racing = _RacingIndex(db, arrive)
        moved = index.take_new(racing, root, "INBOX") + index.take_new(racing, root, "INBOX")
        self.assertEqual([(m[0], m[3]) for m in moved], [("1000.M1P1.host:2,", "\\Seen")])
