"""RFC 3501 points imaptest's scripted suite found TrekMail missing, each pinned on its own."""

import os
import re

from twisted.trial import unittest

from tests.imap_inline import Session


def _uidvalidity(out):
    return int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))


class UIDValidityTests(unittest.TestCase):
    def test_recreated_name_gets_a_greater_uidvalidity_within_the_second(self):
        """RFC 3501 2.3.1.1: a name deleted and created again must not reuse its UIDVALIDITY."""
        session = Session(self).login(select=False)
        seen = []
        for round in range(3):
            self.assertIn(b"OK", session.command(b"c CREATE box")[1])
            out, _ = session.command(b"s SELECT box")
            seen.append(_uidvalidity(out))
            session.command(b"u UNSELECT")
            self.assertIn(b"OK", session.command(b"d DELETE box")[1])
        self.assertEqual(sorted(set(seen)), seen)


class ExamineTests(unittest.TestCase):
    def test_examine_counts_recent_without_taking_it_and_allows_no_flag_changes(self):
        """RFC 3501 6.3.2: EXAMINE's answer is SELECT's, read-only; \\Recent stays for the next SELECT."""
        session = Session(self).login(select=False)
        for n in range(2):
            with open(os.path.join(session.root(), "new", "100.M%06dP1Q%d.h" % (n, n)), "wb") as f:
                f.write(b"Subject: %d\r\n\r\nbody\r\n" % n)
        out, tagged = session.command(b"e EXAMINE INBOX")
        self.assertIn(b"* 2 RECENT", out)
        self.assertIn(b"[PERMANENTFLAGS ()]", out)
        self.assertIn(b"READ-ONLY", tagged)
        out, tagged = session.command(b"s SELECT INBOX")
        self.assertIn(b"* 2 RECENT", out)
        self.assertIn(b"\\*)]", out)


class CondstoreTests(unittest.TestCase):
    def test_first_fetch_modseq_tells_highestmodseq(self):
        """RFC 7162 3.1: a CONDSTORE-enabling command on a selected mailbox sends HIGHESTMODSEQ, once."""
        session = Session(self).login()
        session.append(b"Subject: x\r\n\r\nbody\r\n")
        out, _ = session.command(b"f FETCH 1 (MODSEQ)")
        self.assertIn(b"* OK [HIGHESTMODSEQ ", out)
        self.assertLess(out.index(b"HIGHESTMODSEQ"), out.index(b"FETCH (MODSEQ"))
        out, _ = session.command(b"g FETCH 1 (MODSEQ)")
        self.assertNotIn(b"HIGHESTMODSEQ", out)
