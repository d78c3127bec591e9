"""
C{trekmail import maildir} and C{import mbox} from files the test
writes: folders, flags (Maildir info letters and Dovecot keywords; mbox
Status, X-Status and X-Keywords), INTERNALDATE, bytes with CRLF line
ends, and a second run that copies nothing again.  Read back as the IMAP
server reads a folder (L{index.load_folder}, which picks up C{new/}).
"""

import os
from io import StringIO

from twisted.trial import unittest

from tests.support import example, realm
from trekmail import cli
from trekmail.imap import index
from trekmail.mailstore import maildir_path


def _folder(root, name):
    db = index.open_index(root, 2e9)
    try:
        _, rows, _ = index.load_folder(db, root, name, 2e9)
        contents = index.read_messages(root, name, [r[1] for r in rows])
        return sorted((contents[r[1]], frozenset(r[2].split()), r[5]) for r in rows)
    finally:
        db.close()


class FileImportTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, _ = realm(self)
        example(self.admin)
        self.path = self.config.path
        self.root = maildir_path(self.config.data_dir, "alice@example.com")

    def _import(self, kind, path):
        out, err = StringIO(), StringIO()
        code = cli.main(["--config", self.path, "--json", "import", kind, path, "--mailbox", "alice@example.com"],
                        stdout=out, stderr=err)
        self.assertEqual(code, 0, err.getvalue())
        return out.getvalue()

    def _write(self, path, data, mtime):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (mtime, mtime))

    def test_maildir(self):
        source = self.mktemp()
        for sub in ("cur", "new", "tmp", ".Lists.python/cur", ".Lists.python/new", ".Lists.python/tmp"):
            os.makedirs(os.path.join(source, sub))
        self._write(os.path.join(source, "cur", "1000.M1P1.host:2,RS"), b"Subject: one\n\nbody\n", 978343200)
        self._write(os.path.join(source, "new", "1001.M1P1.host"), b"Subject: two\r\n\r\nbody\r\n", 1000000000)
        self._write(os.path.join(source, ".Lists.python", "cur", "1002.M1P1.host:2,Fab"), b"Subject: three\n\n", 1100000000)
        with open(os.path.join(source, ".Lists.python", "dovecot-keywords"), "w") as f:
            f.write("0 $Label1\n1 Important\n")
        self._import("maildir", source)
        self.assertEqual(_folder(self.root, "INBOX"), sorted([
            (b"Subject: one\r\n\r\nbody\r\n", frozenset({"\\Answered", "\\Seen"}), 978343200),
            (b"Subject: two\r\n\r\nbody\r\n", frozenset(), 1000000000)]))
        self.assertEqual(_folder(self.root, "Lists.python"), [
            (b"Subject: three\r\n\r\n", frozenset({"\\Flagged", "$Label1", "Important"}), 1100000000)])
        self.assertIn('"copied": 0', self._import("maildir", source))
        self.assertEqual(len(_folder(self.root, "INBOX")), 2)
        db = index.open_index(self.root, 2e9)
        self.addCleanup(db.close)
        self.assertTrue({"Lists", "Lists.python"} <= set(index.list_folders(db).subscribed),
                        "imported folders are subscribed, so LSUB clients show them")

    def test_mbox(self):
        source = self.mktemp()
        self._write(source, b"From bob@example.org Mon Jan  1 10:00:00 2001\n"
                            b"Subject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Later\n\n"
                            b"body\n>From the start\n\n"
                            b"From carol@example.org Sun Sep  9 01:46:40 2001\n"
                            b"Subject: two\n\nsecond\n", 0)
        self._import("mbox", source)
        self.assertEqual(_folder(self.root, "INBOX"), sorted([
            (b"Subject: one\r\nStatus: RO\r\nX-Status: AF\r\nX-Keywords: $Label1 Later\r\n\r\nbody\r\nFrom the start\r\n",
             frozenset({"\\Seen", "\\Answered", "\\Flagged", "$Label1", "Later"}), 978343200),
            (b"Subject: two\r\n\r\nsecond\r\n", frozenset(), 1000000000)]))
        self.assertIn('"copied": 0', self._import("mbox", source))

    def test_unknown_mailbox_is_refused(self):
        err = StringIO()
        code = cli.main(["--config", self.path, "import", "mbox", self.mktemp(), "--mailbox", "nobody@example.com"],
                        stdout=StringIO(), stderr=err)
        self.assertEqual(code, 1)
        self.assertIn("no mailbox nobody@example.com", err.getvalue())
