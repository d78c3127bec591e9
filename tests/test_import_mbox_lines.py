"""
An mbox line longer than the reader's 64 KiB piece: the rest of it, read
as the next piece, may begin with C{From } or be a bare newline, and is
still the same line, in the copy and when a resumed import skips the
messages an earlier run copied.
"""

from twisted.trial import unittest

from tests.support import example, realm
from trekmail.admin import importer
from trekmail.admin.importfiles import CHUNK, MboxSource
from trekmail.imap import index
from trekmail.mailstore import maildir_path

LONG_BODY = b"x" * CHUNK + b"From the middle of a line\n"
LONG_HEADER = b"X-Long: " + b"y" * (CHUNK - 8) + b"From here too\n"
MESSAGES = [
    b"Subject: one\n\n" + LONG_BODY + b"end of one\n",
    b"Subject: two\n" + LONG_HEADER + b"\nbody two\n",
    b"Subject: three\nX-Pad: " + b"z" * (CHUNK - 22) + b"\n\nbody three\n",
    b"Subject: four\n\nbody four\n",
]


class _Stop(Exception):
    pass


class LongLineTests(unittest.TestCase):
    def setUp(self):
        self.config, admin, _ = realm(self)
        example(admin)
        self.root = maildir_path(self.config.data_dir, "alice@example.com")
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            for n, message in enumerate(MESSAGES):
                f.write(b"From bob@example.org Mon Jan  1 10:00:0%d 2001\n" % (n,) + message + b"\n")

    def _import(self, progress=lambda event: None):
        return importer.run(MboxSource(self.path), self.config.data_dir, "alice@example.com", lambda: 1e9, 10 ** 7,
                            progress)

    def _copied(self):
        db = index.open_index(self.root, 2e9)
        try:
            _, rows, _ = index.load_folder(db, self.root, "INBOX", 2e9)
            contents = index.read_messages(self.root, "INBOX", [r[1] for r in rows])
            return sorted(contents[r[1]] for r in rows)
        finally:
            db.close()

    def _expected(self):
        return sorted(m.replace(b"\n", b"\r\n") for m in MESSAGES)

    def test_a_whole_import_keeps_each_long_line_in_its_message(self):
        self.assertEqual(self._import()["copied"], len(MESSAGES))
        self.assertEqual(self._copied(), self._expected())

    def test_a_resumed_import_lands_on_the_same_message(self):
        def stop_after(count):
            seen = []

            def progress(event):
                seen.append(event["position"])
                if len(seen) == count:
                    raise _Stop()
            return progress

        self.assertRaises(_Stop, self._import, stop_after(1))
        self.assertRaises(_Stop, self._import, stop_after(2))
        self.assertEqual(self._import()["copied"], 1)
        self.assertEqual(self._copied(), self._expected())
