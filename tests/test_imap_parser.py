"""Command framing and tokens: literals (LITERAL+ too), lists, sequence and UID sets."""

import random

from twisted.trial import unittest

from trekmail.imap import parser
from trekmail.imap.parser import Atom, Framer, Literal, ProtocolError, Reader


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

    def test_atoms_with_sections_read_alike_on_the_fast_and_the_general_path(self):
        """The common-token pattern takes one bracketed section; the character-level reader is the definition."""
        for text in (b"BODY[]", b"BODY.PEEK[HEADER.FIELDS (From To)]<0.2>", b"BODY[1.2.MIME]", b"X[a]b",
                     b"A[b][c]", b"A[b[c]]", b"BODY[HEADER.FIELDS (\"x\")]", b"A[b]{3}", b'A[b]"q"', b"A[b]c[d]"):
            line = b"(" + text + b" FLAGS)"
            general = Reader(line, [line])
            general.pos = 1
            try:
                expected = general._other_token(line)
            except ProtocolError:
                expected = ProtocolError
            try:
                found = Reader(line, [line]).rest()[0][0]
            except ProtocolError:
                found = ProtocolError
            self.assertEqual(found, expected, text)

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

    def test_sequence_members_of_a_view(self):
        uids = [3, 7, 9, 20]
        self.assertEqual(parser.sequence_members("2:3", uids), [7, 9])
        self.assertEqual(parser.sequence_members("4,1,2", uids), [3, 7, 20])
        self.assertEqual(parser.sequence_members("*:3", uids), [9, 20])
        self.assertEqual(parser.sequence_members("*", []), [])
        for bad in ("5", "1:5", "5:*", "0", ""):
            self.assertRaises(ProtocolError, parser.sequence_members, bad, uids)

    def test_uid_sets(self):
        uids = [3, 7, 9, 20]
        self.assertEqual(parser.uid_set("1:8", uids), [3, 7])
        self.assertEqual(parser.uid_set("*", uids), [20])
        self.assertEqual(parser.uid_set("10:*", uids), [20])
        self.assertEqual(parser.uid_set("21:*", uids), [20], "n:* includes the largest UID (RFC 3501 6.4.8)")
        self.assertEqual(parser.uid_set("5", uids), [])

    def test_sets_agree_with_their_definition(self):
        """Merged spans give the sorted distinct members, whatever the order and overlap of the items."""
        chooser = random.Random(8)
        uids = sorted(chooser.sample(range(1, 200), 60))
        for _ in range(500):
            items = []
            for _ in range(chooser.randint(1, 6)):
                a, b = chooser.choice(["*", str(chooser.randint(1, 210))]), chooser.choice(["*", str(chooser.randint(1, 210))])
                items.append(a if chooser.random() < 0.3 else a + ":" + b)
            text = ",".join(items)

            def members(largest):
                out = set()
                for item in items:
                    low, _, high = item.partition(":")
                    a = largest if low == "*" else int(low)
                    b = (largest if high == "*" else int(high)) if high else a
                    out.update(range(min(a, b), max(a, b) + 1))
                return out

            self.assertEqual(parser.sequence_set(text, 60), sorted(n for n in members(60) if n <= 60), text)
            self.assertEqual(parser.uid_set(text, uids), sorted(set(uids) & members(uids[-1])), text)

    def test_repeated_items_are_merged_before_the_mailbox_is_walked(self):
        self.assertEqual(parser.merged_spans([(1, 101)] * 16000 + [(5, 7), (200, 201), (101, 150)]),
                         [(1, 150), (200, 201)])

    def test_mailbox_names(self):
        self.assertEqual(parser.mailbox_name(b"inbox"), "INBOX")
        self.assertEqual(parser.mailbox_name(b"Inbox.Sub"), "INBOX.Sub")
        self.assertFalse(parser.valid_new_name("a..b"))
        self.assertFalse(parser.valid_new_name("../x"))
        self.assertFalse(parser.valid_new_name(".hidden"))
        self.assertTrue(parser.valid_new_name("Projects.2026"))


def tokens(line, *more):
    """The tokens of C{line} (and literal/line segments after it), as the session reads them."""
    return Reader(line, [line] + list(more)).rest()


class TokenTests(unittest.TestCase):
    """The regular-expression tokenizer and the cases it hands to the slower one."""

    def test_atoms_strings_and_lists(self):
        self.assertEqual(tokens(b'a  "b c" (d (e)) f(g)h'), ["a", b"b c", ["d", ["e"]], "f", ["g"], "h"])
        self.assertEqual([type(t) for t in tokens(b'INBOX "INBOX"')], [Atom, bytes])
        self.assertEqual(tokens(b'""'), [b""])
        self.assertEqual(tokens(b"]x] ()"), ["]x]", []])

    def test_escapes_in_strings(self):
        self.assertEqual(tokens(b'"a\\"b" "c\\\\" "\\d"'), [b'a"b', b"c\\", b"d"])
        for bad in (b'"abc\\"', b'"abc\\', b'"abc'):
            self.assertRaises(ProtocolError, tokens, bad)

    def test_brackets_hold_spaces_quotes_and_parentheses(self):
        self.assertEqual(tokens(b'BODY.PEEK[HEADER.FIELDS (A "B")]<0.5> x[a[b]c]d'),
                         ['BODY.PEEK[HEADER.FIELDS (A "B")]<0.5>', "x[a[b]c]d"])
        self.assertEqual(tokens(b"a[1]b[2] c"), ["a[1]b[2]", "c"])
        for bad in (b"x[", b"x[a[b]", b"a[1]b[", b"a[1]\"", b'a"b', b"a{3}", b"{3}"):
            self.assertRaises(ProtocolError, tokens, bad)

    def test_literals_between_segments(self):
        self.assertEqual(tokens(b"(a ", Literal(b"x y"), b" b) c"), [["a", b"x y", "b"], "c"])
        self.assertEqual(tokens(b"", Literal(b""), b""), [b""])
        self.assertRaises(ProtocolError, tokens, b"(a ", Literal(b"x"), b"")

    def test_other_bytes_in_atoms(self):
        self.assertEqual(tokens(b"caf\xc3\xa9 \xff\tx"), ["caf\u00e9", "\ufffd\tx"])

    def test_nesting_bound(self):
        nested = tokens(b"(" * parser.MAX_DEPTH + b")" * parser.MAX_DEPTH)
        for _ in range(parser.MAX_DEPTH):
            self.assertEqual(len(nested), 1)
            nested = nested[0]
        self.assertEqual(nested, [])
        self.assertRaises(ProtocolError, tokens, b"(" * (parser.MAX_DEPTH + 1) + b")" * (parser.MAX_DEPTH + 1))

    def test_sets_of_one_and_several_ranges(self):
        self.assertEqual(parser.sequence_set("2:4", 6), [2, 3, 4])
        self.assertEqual(parser.sequence_set("5,1:2,2", 6), [1, 2, 5])
        self.assertEqual(parser.uid_set("9,3:7,7", [3, 7, 9, 20]), [3, 7, 9])
