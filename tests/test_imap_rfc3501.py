"""RFC 3501 points imaptest's scripted suite found TrekMail missing, each pinned on its own."""

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
