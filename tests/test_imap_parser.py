"""Command framing and tokens: literals (LITERAL+ too), lists, sequence and UID sets."""

from twisted.trial import unittest

from trekmail.imap import parser
from trekmail.imap.parser import Atom, Framer, ProtocolError, Reader


class Handler:
    def __init__(self, limit=100):
        self.limit = limit
        self.asked = []

    def literal_wanted(self, first_line, size, synchronising):
        self.asked.append((first_line, size, synchronising))
        return size <= self.limit


def commands(data, handler=None):
    framer = Framer(handler or Handler())
    framer.feed(data)
    out = []
    while True:
        command = framer.next_command()
        if command is None:
            return out, framer
        tag, name, rest = parser.split_tag(command[0])
        out.append((tag, name, Reader(rest, command).rest()))


class FramerTests(unittest.TestCase):
    def test_literals_quoted_and_lists(self):
        handler = Handler()
        out, _ = commands(b'a LOGIN {5}\r\nalice "pa\\"ss"\r\nb FETCH 1:* (FLAGS BODY[HEADER.FIELDS (A B)]<0.5>)\r\n',
                          handler)
        self.assertEqual(out[0], ("a", "LOGIN", [b"alice", b'pa"ss']))
        self.assertEqual(out[1], ("b", "FETCH", ["1:*", ["FLAGS", "BODY[HEADER.FIELDS (A B)]<0.5>"]]))
        self.assertIsInstance(out[1][2][0], Atom)
        self.assertEqual(handler.asked, [(b"a LOGIN ", 5, True)])

    def test_non_synchronising_literal(self):
        handler = Handler()
        out, _ = commands(b"a APPEND INBOX {3+}\r\nabc\r\nb NOOP\r\n", handler)
        self.assertEqual(out, [("a", "APPEND", ["INBOX", b"abc"]), ("b", "NOOP", [])])
        self.assertEqual(handler.asked, [(b"a APPEND INBOX ", 3, False)])

    def test_refused_non_synchronising_literal_is_skipped(self):
        out, framer = commands(b"a APPEND INBOX {500+}\r\n" + b"x" * 500 + b"\r\nb NOOP\r\n")
        self.assertEqual(out, [("b", "NOOP", [])])
        self.assertEqual(len(framer.buffer), 0)

    def test_partial_literal_waits(self):
        framer = Framer(Handler())
        framer.feed(b"a LOGIN {5}\r\nali")
        self.assertIsNone(framer.next_command())
        framer.feed(b"ce bob\r\n")
        self.assertEqual(framer.next_command(), [b"a LOGIN ", b"alice", b" bob"])

    def test_absurd_literal(self):
        framer = Framer(Handler())
        framer.feed(b"a APPEND INBOX {4294967296}\r\n")
        error = self.assertRaises(parser.BadLiteral, framer.next_command)
        self.assertEqual((error.tag, error.fatal), ("a", False))

    def test_long_line(self):
        framer = Framer(Handler())
        framer.feed(b"a " + b"x" * parser.MAX_LINE)
        self.assertRaises(parser.LineTooLong, framer.next_command)

    def test_syntax_errors(self):
        for bad in (b'a X "open\r\n', b"a X (1 2\r\n", b"a X 1)\r\n", b"a X " + b"(" * 20 + b")" * 20 + b"\r\n",
                    b"a X BODY[1\r\n"):
            self.assertRaises(ProtocolError, commands, bad)


class SetTests(unittest.TestCase):
    def test_sequence_sets(self):
        self.assertEqual(parser.sequence_set("1:3,5,*", 6), [1, 2, 3, 5, 6])
        self.assertEqual(parser.sequence_set("4:2", 6), [2, 3, 4])
        self.assertEqual(parser.sequence_set("1:4294967295", 3), [1, 2, 3])
        for bad in ("", "0", "a", "1:x", "99999999999"):
            self.assertRaises(ProtocolError, parser.sequence_set, bad, 6)

    def test_uid_sets(self):
        uids = [3, 7, 9, 20]
        self.assertEqual(parser.uid_set("1:8", uids), [3, 7])
        self.assertEqual(parser.uid_set("*", uids), [20])
        self.assertEqual(parser.uid_set("10:*", uids), [20])
        self.assertEqual(parser.uid_set("21:*", uids), [20], "n:* includes the largest UID (RFC 3501 6.4.8)")
        self.assertEqual(parser.uid_set("5", uids), [])

    def test_mailbox_names(self):
        self.assertEqual(parser.mailbox_name(b"inbox"), "INBOX")
        self.assertEqual(parser.mailbox_name(b"Inbox.Sub"), "INBOX.Sub")
        self.assertFalse(parser.valid_new_name("a..b"))
        self.assertFalse(parser.valid_new_name("../x"))
        self.assertFalse(parser.valid_new_name(".hidden"))
        self.assertTrue(parser.valid_new_name("Projects.2026"))
