"""
The mailbox index and local delivery take the time from their caller's
clock (the wiring's C{reactor.seconds}), never from C{time.time}: a
test's clock rules UIDVALIDITY, Maildir file names and the age of
C{tmp/} files.
"""

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from trekmail.imap import index
from trekmail.mailstore import maildir_path
from trekmail.queue.maildir import deliver_batch

NOW = 1234567890.25


class IndexClockTests(unittest.TestCase):
    def setUp(self):
        self.root = self.mktemp()
        self.db = index.open_index(self.root, NOW)
        self.addCleanup(self.db.close)

    def test_uidvalidity_is_the_given_time(self):
        self.assertEqual(self.db.execute("SELECT uidvalidity FROM folders WHERE name = 'INBOX'").fetchone()[0],
                         int(NOW))
        index.create_folder(self.db, self.root, "Later", NOW + 1000)
        self.assertEqual(self.db.execute("SELECT uidvalidity FROM folders WHERE name = 'Later'").fetchone()[0],
                         int(NOW) + 1000)

    def test_stale_tmp_files_are_aged_by_the_given_time(self):
        tmp = os.path.join(self.root, "tmp")
        for name, age in (("old", 37 * 3600), ("young", 35 * 3600)):
            with open(os.path.join(tmp, name), "wb"):
                pass
            os.utime(os.path.join(tmp, name), (NOW - age, NOW - age))
        index.load_folder(self.db, self.root, "INBOX", NOW)
        self.assertEqual(os.listdir(tmp), ["young"])

    def test_appended_and_copied_names_carry_the_given_time(self):
        name = index.write_message(self.root, "INBOX", b"Subject: x\r\n\r\nx\r\n", 1000, NOW)
        self.assertTrue(name.startswith("1234567890.M250000P"), name)
        (copy,) = index.link_messages(self.root, "INBOX", "INBOX", [name], NOW + 1)
        self.assertTrue(copy.startswith("1234567891.M250000P"), copy)


class DeliveryClockTests(unittest.TestCase):
    def test_delivered_names_carry_the_clock_time(self):
        root = self.mktemp()
        clock = Clock()
        clock.advance(NOW)
        self.assertEqual(deliver_batch(root, "mail.test", [("a@example.com", "", b"x\r\n")], clock.seconds), [None])
        (name,) = os.listdir(os.path.join(maildir_path(root, "a@example.com"), "new"))
        self.assertTrue(name.startswith("1234567890.M250000P"), name)
