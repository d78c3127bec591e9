"""
LIST/LSUB pattern matching (trekmail/imap/listpattern.py): the answers of
RFC 3501 section 6.3.8, and linear time on patterns that made a regex
backtrack for minutes.
"""

import random
import re
import time

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import Site
from tests.test_imap_session import raw

from trekmail.imap.listpattern import MailboxPattern


def reference_match(reference, pattern, name):
    """The plain reading of RFC 3501 6.3.8 as a regex: fine for short, tame patterns only."""
    text = pattern if pattern.startswith(".") else reference + pattern
    if text.upper().startswith("INBOX"):
        text = "INBOX" + text[5:]
    regex = "".join(".*" if c == "*" else "[^.]*" if c == "%" else re.escape(c) for c in text)
    return re.fullmatch(regex, name) is not None


class MailboxPatternTests(unittest.TestCase):
    def test_rfc_examples(self):
        names = ["INBOX", "Sent", "Archive", "Archive.2024", "Archive.2024.Q1", "Drafts"]
        listed = lambda ref, pat: [n for n in names if MailboxPattern(ref, pat).match(n)]
        self.assertEqual(listed("", "*"), names)
        self.assertEqual(listed("", "%"), ["INBOX", "Sent", "Archive", "Drafts"])
        self.assertEqual(listed("Archive.", "%"), ["Archive.2024"])
        self.assertEqual(listed("Archive.", "*"), ["Archive.2024", "Archive.2024.Q1"])
        self.assertEqual(listed("", "inbox"), ["INBOX"])
        self.assertEqual(listed("", "A%.%"), ["Archive.2024"])
        self.assertEqual(listed("", "*Q1"), ["Archive.2024.Q1"])
        self.assertEqual(listed("", "D%*%s"), ["Drafts"])

    def test_agrees_with_the_regex_reading(self):
        rng = random.Random(3501)
        alphabet = "ab.*%"
        for _ in range(3000):
            pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            name = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 10)))
            self.assertEqual(MailboxPattern("", pattern).match(name), reference_match("", pattern, name),
                             (pattern, name))

    def test_wildcard_runs_do_not_backtrack(self):
        """40 stars and a letter that never comes: a backtracking regex took minutes on this."""
        names = ["Folder%03d.Sub.Deeper.Name" % i for i in range(200)]
        started = time.process_time()
        for pattern in ["*" * 40 + "Z", "%*" * 200 + "Z", "*a" * 500]:
            matcher = MailboxPattern("", pattern)
            self.assertFalse(any(matcher.match(n) for n in names))
        self.assertLess(time.process_time() - started, 2.0)


class ListOverTheWireTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_forty_stars_answer_at_once(self):
        """Over real TLS: the regex version held the reactor (and this client's 30 s timeout) for minutes."""
        site = Site(self)
        site.account()

        def session():
            client = site.connect()
            for n in range(20):
                client.create("Folder%02d.Sub.Deeper" % n)
            answer = raw(client, b'LIST "" "' + b"*" * 40 + b'Z"')
            listing = raw(client, b'LIST "" "Folder1%.*"')
            client.logout()
            return answer, listing

        (untagged, tagged), (listed, _) = yield site.in_thread(session)
        self.assertEqual(untagged, [])
        self.assertIn(b"OK LIST completed", tagged)
        self.assertEqual(len(listed), 20)
