"""MIME structure, ENVELOPE, BODYSTRUCTURE and sections, computed from raw bytes."""

from twisted.trial import unittest

from trekmail.imap import message

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
