"""
Hostile commands that once ended in an internal error (C{NO [SERVERBUG]}
and a logged traceback), a recursion, or a session held open before
login: each now has a plain protocol answer.
"""

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.imap_inline import Session
from trekmail import mailstore
from trekmail.imap import index, parser, search

MESSAGE = b"Subject: caf\xc3\xa9\r\nFrom: a@example.com\r\n\r\nbody\r\n"


class HostileSearchTests(unittest.TestCase):
    def setUp(self):
        self.session = Session(self).login()
        self.session.append(MESSAGE)

    def tagged(self, line):
        return self.session.command(line)[1]

    def test_unsupported_charset_is_badcharset(self):
        for charset in (b"KOI8-R", b'"\xff\xfe"', b"{2+}\r\n\xc0\xc1"):
            self.assertEqual(self.tagged(b"a SEARCH CHARSET " + charset + b" ALL"),
                             b"a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")

    def test_strings_invalid_in_the_declared_charset_are_bad(self):
        self.assertEqual(self.tagged(b'a SEARCH CHARSET US-ASCII SUBJECT "caf\xc3\xa9"'),
                         b"a BAD Search string is not valid US-ASCII")
        self.assertEqual(self.tagged(b"b SEARCH CHARSET UTF-8 SUBJECT {2+}\r\n\xff\xfe"),
                         b"b BAD Search string is not valid UTF-8")
        self.assertEqual(self.tagged(b"c SEARCH BODY {1+}\r\n\xff"), b"c BAD Search string is not valid UTF-8")
        out, tagged = self.session.command(b'd SEARCH CHARSET UTF-8 SUBJECT "caf\xc3\xa9"')
        self.assertEqual((out, tagged), (b"* SEARCH 1", b"d OK Search completed"))

    def test_modifiers_given_a_list_are_bad(self):
        self.assertEqual(self.tagged(b"a FETCH 1 (FLAGS) (CHANGEDSINCE (1))"), b"a BAD Invalid CHANGEDSINCE")
        self.assertEqual(self.tagged(b"b STORE 1 (UNCHANGEDSINCE (1)) +FLAGS (\\Seen)"),
                         b"b BAD Invalid UNCHANGEDSINCE")
        self.assertEqual(self.tagged(b"c SEARCH MODSEQ (1)"), b"c BAD Invalid MODSEQ")
        self.assertEqual(self.tagged(b"d SEARCH LARGER (1)"), b"d BAD Invalid size")
        self.assertEqual(self.tagged(b"e STORE 1 (UNCHANGEDSINCE 1_0) +FLAGS (\\Seen)"),
                         b"e BAD Invalid UNCHANGEDSINCE")

    def test_nesting_is_bounded(self):
        for criteria in (b"NOT " * 999 + b"ALL", b"OR ALL " * 999 + b"ALL", b"OR " * 999 + b"ALL " * 1000):
            self.assertEqual(self.tagged(b"a SEARCH " + criteria), b"a BAD Search keys nested too deeply")
        out, tagged = self.session.command(b"b SEARCH " + b"NOT " * (search.MAX_DEPTH - 1) + b"ALL")
        self.assertEqual((out, tagged), (b"* SEARCH", b"b OK Search completed"))
        out, tagged = self.session.command(b"c SEARCH " + b"NOT " * search.MAX_DEPTH + b"ALL")
        self.assertEqual((out, tagged), (b"* SEARCH 1", b"c OK Search completed"))


class FolderNameTests(unittest.TestCase):
    def test_limit_is_on_stored_bytes(self):
        session = Session(self).login(select=False)
        long_name = "é".encode() * 130
        self.assertEqual(session.command(b"a CREATE " + long_name)[1], b"a NO [CANNOT] Invalid mailbox name")
        fits = b"x" * parser.MAX_NAME_BYTES
        self.assertEqual(session.command(b"b CREATE " + fits)[1], b"b OK Create completed")
        self.assertTrue(os.path.isdir(os.path.join(session.root(), "." + fits.decode())))
        self.assertEqual(session.command(b"c CREATE " + fits + b"y")[1], b"c NO [CANNOT] Invalid mailbox name")

    def test_rename_checks_the_children_names(self):
        session = Session(self).login(select=False)
        self.assertEqual(session.command(b"a CREATE Top.Child")[1], b"a OK Create completed")
        longer = b"T" * (parser.MAX_NAME_BYTES - 3)
        self.assertEqual(session.command(b"b RENAME Top " + longer)[1],
                         b"b NO [CANNOT] A child's new name would be too long")
        self.assertEqual(session.command(b"c RENAME Top Other")[1], b"c OK Rename completed")

    def test_rename_onto_an_existing_child_is_refused(self):
        """Found by the fuzzer: C{a.b} without C{a}, then RENAME of a folder with a child C{b} to C{a}."""
        session = Session(self).login(select=False)
        for line in (b"a CREATE x.b", b"b RENAME x.b a.b", b"c CREATE Top.b"):
            self.assertTrue(session.command(line)[1].startswith(line[:2] + b"OK"))
        self.assertEqual(session.command(b"d RENAME Top a")[1], b"d NO [ALREADYEXISTS] A child's new name exists")
        self.assertEqual(session.command(b"e RENAME Top Other")[1], b"e OK Rename completed")


class LoginDeadlineTests(unittest.TestCase):
    def test_commands_before_login_do_not_rearm_the_deadline(self):
        clock = Clock()
        session = Session(self, clock).connect()
        for _ in range(5):
            clock.advance(11)
            self.assertIn(b"OK NOOP completed", session.send(b"n NOOP\r\n"))
        session.transport.clear()
        clock.advance(60 - 55)
        self.assertTrue(session.transport.disconnecting)
        self.assertIn(b"* BYE Autologout", session.transport.value())
        self.assertEqual(session.limits.counts, {})

    def test_logged_in_activity_still_rearms(self):
        clock = Clock()
        session = Session(self, clock).login(select=False)
        clock.advance(29 * 60)
        session.send(b"n NOOP\r\n")
        clock.advance(29 * 60)
        self.assertFalse(session.transport.disconnecting)
        clock.advance(60)
        self.assertTrue(session.transport.disconnecting)


class ArrivalOrderTests(unittest.TestCase):
    def test_unique_names_sort_as_made(self):
        names = [mailstore.unique_name(now, "h") for now in (100.000005, 100.000040, 100.5)]
        self.assertEqual(sorted(names), names)
        self.assertIn(".M000005P", names[0])

    def test_uids_follow_arrival_even_for_unpadded_names(self):
        session = Session(self).login(select=False)
        new = os.path.join(session.root(), "new")
        names = ["100.M5P7Q1.h", "100.M40P7Q2.h", "100.M40P7Q10.h", "100.M300000P7Q3.h", "101.M2P7Q4.h"]
        for number, name in enumerate(reversed(names)):
            with open(os.path.join(new, name), "wb") as f:
                f.write(b"Subject: %d\r\n\r\n" % (len(names) - number))
        out, tagged = session.command(b"a SELECT INBOX")
        self.assertIn(b"* 5 EXISTS", out)
        out, _ = session.command(b"b FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [line for line in out.split(b"\r\n") if line.startswith(b"Subject:")]
        self.assertEqual(subjects, [b"Subject: %d" % n for n in range(1, 6)])
        self.assertEqual(sorted(names, key=index.arrival_order), names)
