"""
L{importimap.IMAPSource} against a scripted imaplib connection: a folder
too large for one C{UID SEARCH} line, a message longer than its stated
size, a literal far larger than asked for, and the source's and the
target's errors reaching the operator as one line.
"""

import imaplib
import sqlite3
from io import StringIO

from twisted.trial import unittest

from tests.support import example, realm
from trekmail import cli
from trekmail.admin import importimap, importtarget


class _Scripted:
    """The part of imaplib.IMAP4 IMAPSource uses, over C{messages} (UID to bytes); errors as imaplib raises them."""

    def __init__(self, messages, line_limit=imaplib._MAXLINE, fail=None):
        self.messages = messages
        self.uids = sorted(messages)
        self.line_limit = line_limit
        self.fail = fail

    def list(self):
        return "OK", [b'() "/" INBOX']

    def select(self, name, readonly=False):
        return "OK", [str(len(self.uids)).encode()]

    def response(self, code):
        return code, [b"7"]

    def logout(self):
        pass

    def uid(self, command, *args):
        if self.fail:
            raise self.fail
        if command == "SEARCH":
            words = args[0].split()
            first, last = map(int, words[0].split(":")) if len(words) == 3 else (1, len(self.uids))
            low = int(words[-1].split(":")[0])
            line = b"* SEARCH " + b" ".join(b"%d" % u for u in self.uids[first - 1:last] if u >= low)
            if len(line) > self.line_limit:
                raise imaplib.IMAP4.error("got more than %d bytes" % self.line_limit)
            return "OK", [line[len(b"* SEARCH "):]]
        if "BODY.PEEK" in args[1]:
            offset, length = map(int, args[1].split("<")[1].rstrip(">)").split("."))
            data = self.messages[int(args[0])]
            return "OK", [(b"%s (UID %s BODY[]<%d> {%d}" % (args[0].encode(), args[0].encode(), offset,
                                                               len(data[offset:offset + length])),
                           data[offset:offset + length]), b")"]
        return "OK", [b'%d (UID %d FLAGS (\\Seen) INTERNALDATE "01-Jan-2001 10:00:00 +0000" RFC822.SIZE 10)' % (u, u)
                      for u in map(int, args[0].split(","))]


_IMAPSource = importimap.IMAPSource


def _source(imap):
    source = _IMAPSource.__new__(_IMAPSource)
    source.name, source.imap = "imap:test", imap
    return source


class IMAPSourceTests(unittest.TestCase):
    def test_a_folder_too_large_for_one_search_line_is_read_in_windows(self):
        uids = range(10 ** 9, 10 ** 9 + 100000)
        source = _source(_Scripted(dict.fromkeys(uids, b"x")))
        source.open(b"INBOX")
        self.assertEqual([m[0] for m in source.messages(b"INBOX", 10 ** 9 + 5)], list(uids)[6:])

    def test_a_message_longer_than_its_stated_size_is_read_whole(self):
        self.patch(importimap, "CHUNK", 4)
        source = _source(_Scripted({3: b"0123456789abcdef", 4: b"01234567"}))
        source.open(b"INBOX")
        self.assertEqual([(m[0], b"".join(m[3])) for m in source.messages(b"INBOX", 0)],
                         [(3, b"0123456789abcdef"), (4, b"01234567")])

    def test_a_literal_far_larger_than_a_piece_is_refused_unread(self):
        wire = _Wire(b"* OK hi\r\n")

        class Connection(importimap.BoundedIMAP4):
            def open(self, host="", port=143, timeout=None):
                self.file, self.sock = wire, None

            def send(self, data):
                tag = data.split()[0]
                if b"CAPABILITY" in data:
                    wire.data += b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n"
                else:
                    wire.data += b"* 1 FETCH (UID 1 BODY[]<0> {4000000000}\r\n"

        imap = Connection()
        imap.state = "SELECTED"
        self.assertRaises(imaplib.IMAP4.abort, imap.uid, "FETCH", "1", "(BODY.PEEK[]<0.1048576>)")
        self.assertLessEqual(max(wire.reads), importimap.CHUNK + importimap.LITERAL_MARGIN)


class _Wire:
    """A server's side of the connection, as imaplib reads it; the sizes it was asked to read."""

    def __init__(self, data):
        self.data = data
        self.reads = [0]

    def readline(self, limit=-1):
        end = self.data.find(b"\n") + 1 or len(self.data)
        line, self.data = self.data[:end], self.data[end:]
        return line

    def read(self, size):
        self.reads.append(size)
        piece, self.data = self.data[:size], self.data[size:]
        return piece


class ImportErrorTests(unittest.TestCase):
    def setUp(self):
        self.config, admin, _ = realm(self)
        example(admin)

    def _import(self, imap):
        self.patch(importimap, "IMAPSource", lambda *a, **k: _source(imap))
        err = StringIO()
        code = cli.main(["--config", self.config.path, "import", "imap", "--from", "old.example", "--user", "a",
                         "--password-stdin", "--mailbox", "alice@example.com"],
                        stdin=StringIO("pw\n"), stdout=StringIO(), stderr=err)
        return code, err.getvalue()

    def test_a_source_dropping_the_connection_is_one_line(self):
        code, err = self._import(_Scripted({1: b"x"}, fail=imaplib.IMAP4.abort("socket error: EOF")))
        self.assertEqual(code, 1)
        self.assertIn("socket error: EOF", err)
        self.assertNotIn("Traceback", err)

    def test_an_oversized_search_line_is_one_line(self):
        code, err = self._import(_Scripted(dict.fromkeys(range(1, 50), b"x"), line_limit=20))
        self.assertEqual(code, 1)
        self.assertIn("got more than 20 bytes", err)

    def test_a_locked_index_is_one_line(self):
        self.patch(importtarget.index, "open_index", lambda *a: (_ for _ in ()).throw(
            sqlite3.OperationalError("database is locked")))
        code, err = self._import(_Scripted({1: b"x"}))
        self.assertEqual(code, 1)
        self.assertIn("database is locked", err)
        self.assertNotIn("Traceback", err)
