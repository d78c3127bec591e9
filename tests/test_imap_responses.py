"""The one builder of tagged IMAP replies (trekmail.imap.responses)."""

from twisted.trial import unittest

from trekmail.imap.responses import tagged


class TaggedTests(unittest.TestCase):
    def test_code_in_brackets_between_status_and_text(self):
        self.assertEqual(tagged("a1", "NO", "No such mailbox", "TRYCREATE"), b"a1 NO [TRYCREATE] No such mailbox\r\n")

    def test_without_code(self):
        self.assertEqual(tagged("a2", "BAD", "Unknown command"), b"a2 BAD Unknown command\r\n")
