"""MIME structure, ENVELOPE, BODYSTRUCTURE and sections, computed from raw bytes."""

import email.utils
import time

from twisted.trial import unittest

from trekmail.imap import addresses, message

NESTED = (
    b'From: "Al" <al@example.com>\r\nTo: a@b.example, "C, D" <c@d.example>\r\nSubject: hi\r\n'
    b"Message-ID: <1@x>\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nthere\r\n"
    b"--XX\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"m.eml\"\r\n\r\n"
    b"Subject: inner\r\n\r\nbody\r\n--XX--\r\nepilogue\r\n"
)


class StructureTests(unittest.TestCase):
    def test_envelope(self):
        envelope, _, _ = message.structures(NESTED)
        self.assertEqual(envelope, b'(NIL "hi" (("Al" NIL "al" "example.com")) (("Al" NIL "al" "example.com")) '
                                   b'(("Al" NIL "al" "example.com")) ((NIL NIL "a" "b.example")'
                                   b'("C, D" NIL "c" "d.example")) NIL NIL NIL "<1@x>")')

    def test_bodystructure(self):
        _, full, plain = message.structures(NESTED)
        self.assertTrue(full.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 12 1 NIL NIL NIL NIL)'))
        self.assertIn(b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 22 (NIL "inner"', full)
        self.assertIn(b'("attachment" ("FILENAME" "m.eml"))', full)
        self.assertTrue(full.endswith(b'"MIXED" ("BOUNDARY" "XX") NIL NIL NIL)'))
        self.assertTrue(plain.endswith(b' "MIXED")'))
        self.assertNotIn(b"BOUNDARY", plain)

    def test_sections(self):
        self.assertEqual(message.section(NESTED, (1,), ""), b"hello\r\nthere", "the CRLF before a boundary is the boundary's")
        self.assertEqual(message.section(NESTED, (2,), "HEADER"), b"Subject: inner\r\n\r\n")
        self.assertEqual(message.section(NESTED, (2,), "TEXT"), b"body")
        self.assertEqual(message.section(NESTED, (2, 1), ""), b"body")
        self.assertTrue(message.section(NESTED, (2,), "MIME").startswith(b"Content-Type: message/rfc822"))
        self.assertEqual(message.section(NESTED, (), "HEADER.FIELDS", ("SUBJECT", "to")),
                         b'To: a@b.example, "C, D" <c@d.example>\r\nSubject: hi\r\n\r\n')
        self.assertTrue(message.section(NESTED, (), "HEADER").endswith(b"\r\n\r\n"))
        self.assertEqual(message.section(NESTED, (9,), ""), b"")

    def test_eight_bit_header_round_trips(self):
        raw = "Subject: caf\u00e9 \u00ff\r\n\r\nx".encode("latin-1")
        envelope, _, _ = message.structures(raw)
        self.assertIn(b'"caf\xe9 \xff"', envelope)

    def test_deep_nesting_is_bounded(self):
        raw = b""
        for depth in range(200):
            raw += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (depth, depth)
        raw += b"\r\nleaf\r\n"
        _, full, _ = message.structures(raw)
        self.assertLess(full.count(b"("), 200 * 3)


ODD_HEADER = (b"subject : Hi\r\nX-Skip: 1\r\n  more skip\r\nTO: a@b\r\n\tcontinued\r\nFrom\r\n\x0bcc: c@d\r\n"
              b"Bad:Line\r\nA:B: weird\r\n\r\nbody\r\nSubject: not a header\r\n")


class HeaderFieldsTests(unittest.TestCase):
    """BODY[HEADER.FIELDS]: field names read as RFC 3501 and the clients in the wild need."""

    def fields(self, raw, *names, negate=False):
        return message.section(raw, (), "HEADER.FIELDS.NOT" if negate else "HEADER.FIELDS", names)

    def test_names_without_regard_to_case_or_space_before_the_colon(self):
        self.assertEqual(self.fields(ODD_HEADER, "Subject", "to"), b"subject : Hi\r\nTO: a@b\r\n\tcontinued\r\n\r\n")
        self.assertEqual(self.fields(ODD_HEADER, "FROM"), b"From\r\n\r\n", "a line without a colon is all name")
        self.assertEqual(self.fields(ODD_HEADER, "cc"), b"\x0bcc: c@d\r\n\r\n")

    def test_names_that_cannot_match(self):
        self.assertEqual(self.fields(ODD_HEADER, "a:b"), b"\r\n")
        self.assertEqual(self.fields(ODD_HEADER, " subject"), b"\r\n")

    def test_not(self):
        self.assertEqual(self.fields(ODD_HEADER, "x-skip", "a", negate=True),
                         b"subject : Hi\r\nTO: a@b\r\n\tcontinued\r\nFrom\r\n\x0bcc: c@d\r\nBad:Line\r\n\r\n")
        self.assertEqual(self.fields(ODD_HEADER, "subject", "to", "from", "cc", "bad", "a", "x-skip", negate=True),
                         b"\r\n")

    def test_bare_newlines_and_missing_blank_line(self):
        self.assertEqual(self.fields(b" lead\nSubject: x\nTo: y\n\nbody", "subject", "lead"), b"Subject: x\n\r\n")
        self.assertEqual(self.fields(b"Subject: x\r\nTo: y", "to"), b"To: y\n\r\n")
        self.assertEqual(self.fields(b"\r\nSubject: x\r\n", "to", negate=True), b"\r\n")
        self.assertEqual(self.fields(b"A: 1\n\r\r\nB: 2\r\n\r\n", "a", "b"), b"A: 1\n\r\n")


def vars_of(mailbox):
    return (mailbox.name, mailbox.route, mailbox.local, mailbox.domain)


class AddressTests(unittest.TestCase):
    """ENVELOPE addresses: the common forms by a regular expression, the rest by the address parser."""

    def test_common_forms_as_getaddresses_reads_them(self):
        for value in ("a@b.example", 'Al <al@example.com>, "C, D" <c@d.example>,e.f@g.example',
                      "=?utf-8?q?Caf=C3=A9?= <x@y.example>", "John  Q.\tPublic <j.q@p.example>",
                      '"  spaced  " <s@t.example>', '"" <e@f.example>', "O'Brien <ob@x.example>",
                      "caf\u00e9 <c@x.example>"):
            fast = addresses._simple(value)
            self.assertIsNotNone(fast, value)
            self.assertEqual([(m.name or "", m.local + "@" + m.domain) for m in fast],
                             email.utils.getaddresses([value]), value)
            self.assertEqual([vars_of(m) for m in fast], [vars_of(m) for m in addresses.parse(value)], value)

    def test_other_forms_fall_back(self):
        for value in ("a@b (Al)", "team: a@b, c@d;", '"a\\"b" <x@y>', '"a b"@c.example', "<@r.example:a@b>",
                      "a@[192.0.2.1]", "a@b,", ",a@b", "a@b,,c@d", "Al <a@b> x", "a..b@c", "<a@b>", "a@b <c@d>",
                      "Al\u00a0B <a@b>", "Al <a@b", "Al (x) <a@b>"):
            self.assertIsNone(addresses._simple(value), value)

    def test_envelope_sender_and_reply_to_default_to_from_only_when_absent(self):
        envelope, _, _ = message.structures(b"From: Al <al@example.com>\r\nSender: list@example.org\r\n"
                                            b"Reply-To: \r\nSubject: s\r\n\r\nbody\r\n")
        self.assertEqual(envelope, b'(NIL "s" (("Al" NIL "al" "example.com")) ((NIL NIL "list" "example.org")) '
                                   b'(("Al" NIL "al" "example.com")) NIL NIL NIL NIL NIL)')

    def test_envelope_of_fallback_forms(self):
        envelope, _, _ = message.structures(b'From: "a\\"b" <x@y.example>\r\nTo: team: a@b.example, c@d.example;\r\n'
                                            b"Cc: Al (Boss) <al@example.com>\r\n\r\n")
        self.assertIn(b'(({3}\r\na"b NIL "x" "y.example"))', envelope)
        self.assertIn(b'((NIL NIL "team" NIL)(NIL NIL "a" "b.example")(NIL NIL "c" "d.example")(NIL NIL NIL NIL))',
                      envelope)
        self.assertIn(b'(("Al" NIL "al" "example.com"))', envelope)


class KeptTests(unittest.TestCase):
    """Messages the store keeps in memory keep their header index and MIME tree for the next FETCH."""

    def test_kept_messages_answer_as_plain_bytes_do(self):
        kept = message.Kept(ODD_HEADER)
        for names, negate in ((("to",), False), (("to",), True), (("subject", "FROM"), False), (("x",), True)):
            text = "HEADER.FIELDS.NOT" if negate else "HEADER.FIELDS"
            self.assertEqual(message.section(kept, (), text, names), message.section(ODD_HEADER, (), text, names))
        self.assertEqual(message.section(kept, (), "TEXT"), b"body\r\nSubject: not a header\r\n")

    def test_index_is_worked_out_once(self):
        kept = message.Kept(NESTED)
        self.assertIsNone(kept.fields)
        message.section(kept, (), "HEADER.FIELDS", ("to",))
        fields = kept.fields
        self.assertEqual([name for name, _ in fields], [b"from", b"to", b"subject", b"message-id", b"content-type"])
        self.assertEqual(message.section(kept, (), "HEADER.FIELDS", ("subject",)), b"Subject: hi\r\n\r\n")
        self.assertIs(kept.fields, fields)
        self.assertEqual(message.section(kept, (2,), "TEXT"), b"body")
        tree = kept.tree
        self.assertEqual(message.section(kept, (1,), ""), b"hello\r\nthere")
        self.assertIs(kept.tree, tree)

    def test_what_is_kept_is_bounded(self):
        many_fields = message.Kept(b"".join(b"X%d: y\r\n" % n for n in range(message.KEPT_FIELDS + 1)) + b"\r\nbody")
        self.assertEqual(message.section(many_fields, (), "HEADER.FIELDS", ("x7",)), b"X7: y\r\n\r\n")
        self.assertIsNone(many_fields.fields)
        parts = b"".join(b"--b\r\n\r\n%d\r\n" % n for n in range(message.KEPT_PARTS))
        many_parts = message.Kept(b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n")
        self.assertEqual(message.section(many_parts, (7,), ""), b"6")
        self.assertIsNone(many_parts.tree)
        few_parts = message.Kept(NESTED)
        message.section(few_parts, (1,), "")
        self.assertIsNotNone(few_parts.tree)


class LongFoldedHeaderTests(unittest.TestCase):
    """A stranger's 1 MB folded header: joining continuation lines one by one made each FETCH quadratic."""

    def setUp(self):
        folded = b"X-Long: start\r\n" + b"\tmore\r\n" * 200000
        self.raw = b"From: a@example.com\r\n" + folded + b"Subject: hi\r\n\r\nbody\r\n"

    def test_header_fields_of_a_long_fold(self):
        started = time.process_time()
        subject = message.section(self.raw, (), "HEADER.FIELDS", ("Subject",))
        structures = message.structures(self.raw)
        long_field = message.section(self.raw, (), "HEADER.FIELDS", ("X-Long",))
        self.assertLess(time.process_time() - started, 3.0)
        self.assertEqual(subject, b"Subject: hi\r\n\r\n")
        self.assertTrue(structures)
        self.assertEqual(long_field.count(b"\tmore"), 200000)

    def test_unfolding_keeps_its_answers(self):
        raw = b"Subject: one\r\n two\r\n\tthree\r\nTo: b@example.com\r\n\r\nx"
        self.assertEqual(message.parse(raw).fields, {"subject": "one two three", "to": "b@example.com"})
        self.assertEqual(message.header_index(raw[:raw.index(b"\r\n\r\n") + 2]),
                         ((b"subject", b"Subject: one\r\n two\r\n\tthree\r"), (b"to", b"To: b@example.com\r")))


def count_parts(part):
    return 1 + sum(count_parts(c) for c in part.children) + (count_parts(part.message) if part.message else 0)


class PartCountTests(unittest.TestCase):
    """A small message of very many empty parts: each one parsed cost memory and BODYSTRUCTURE bytes without end."""

    def many_parts(self, count, nested=False):
        inner = b"--in\r\n\r\n" * 5 + b"--in--\r\n"
        part = (b"--b\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n" + inner) if nested else b"--b\r\n\r\n"
        return (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                + part * count + b"--b--\r\n")

    def test_parts_past_the_bound_are_one_opaque_leaf(self):
        for raw in (self.many_parts(100000), self.many_parts(20000, nested=True)):
            tree = message.parse(raw)
            self.assertLessEqual(count_parts(tree), message.MAX_PARTS + 2)
            self.assertEqual(tree.children[-1].end, len(raw) - len(b"\r\n--b--\r\n"))
            _, bodystructure, _ = message.structures(raw)
            self.assertLess(len(bodystructure), 200 * message.MAX_PARTS)

    def test_within_the_bound_nothing_changes(self):
        tree = message.parse(self.many_parts(50))
        self.assertEqual(count_parts(tree), 51)

    def test_empty_parts_have_no_negative_size(self):
        raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--b\r\n--b--\r\n"
        _, bodystructure, _ = message.structures(raw)
        self.assertNotIn(b" -", bodystructure)


class SectionsOfOneFetchTests(unittest.TestCase):
    """A message past KEPT_PARTS keeps no tree: one FETCH of many of its sections must still parse it once."""

    def test_many_sections_share_one_parse(self):
        from trekmail.imap import fetch
        from trekmail.imap.parser import Atom

        raw = message.Kept(PartCountTests().many_parts(message.KEPT_PARTS + 50))
        request = fetch.parse([[Atom("BODY[%d]" % n) for n in range(1, 41)] + [Atom("BODY[1.MIME]"), Atom("UID")]])
        calls = []
        original = message.parse

        def counted(*args, **kwargs):
            if kwargs.get("depth", 0) == 0 and len(args) < 5:
                calls.append(1)
            return original(*args, **kwargs)

        self.patch(message, "parse", counted)
        line = fetch.renderer(request, add_uid=False)(1, 7, None, (), None, raw)
        self.assertEqual(len(calls), 1)
        self.assertTrue(line.startswith(b"* 1 FETCH (BODY[1] {0}\r\n BODY[2] {0}\r\n"), line[:60])
        self.assertTrue(line.endswith(b" UID 7)\r\n"))
