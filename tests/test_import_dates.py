"""
A message whose source states no date it can read (an mbox C{From } line
without one, an IMAP INTERNALDATE that does not parse) is dated by the
import's clock, the one the wiring passes in, not the machine's.
"""

from twisted.trial import unittest

from tests.support import example, realm
from tests.test_import_imap_source import _Scripted, _source
from trekmail.admin import importer
from trekmail.admin.importfiles import MboxSource
from trekmail.imap import index
from trekmail.mailstore import maildir_path

NOW = 1234567890


class _Undated(_Scripted):
    def uid(self, command, *args):
        answer = super().uid(command, *args)
        if command == "FETCH" and "INTERNALDATE" in args[1]:
            return "OK", [line.replace(b"01-Jan-2001 10:00:00 +0000", b"not a date") for line in answer[1]]
        return answer


class FallbackDateTests(unittest.TestCase):
    def setUp(self):
        self.config, admin, _ = realm(self)
        example(admin)
        self.root = maildir_path(self.config.data_dir, "alice@example.com")

    def _dates(self, source):
        importer.run(source, self.config.data_dir, "alice@example.com", lambda: NOW, 10 ** 6)
        db = index.open_index(self.root, 2e9)
        try:
            _, rows, _ = index.load_folder(db, self.root, "INBOX", 2e9)
            return [r[5] for r in rows]
        finally:
            db.close()

    def test_an_mbox_from_line_without_a_date_takes_the_clock(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"From bob@example.org\nSubject: one\n\nbody\n")
        self.assertEqual(self._dates(MboxSource(path)), [NOW])

    def test_an_unreadable_internaldate_takes_the_clock(self):
        imap = _Undated({5: b"Subject: x\r\n\r\nbody\r\n"})
        self.assertEqual(self._dates(_source(imap)), [NOW])
