"""
L{trekmail.imap.sessions}: the re-check that closes the sessions of a
mailbox deleted by another process, on a L{task.Clock} with a directory
that answers as told.
"""

import sqlite3

from twisted.internet import defer, task
from twisted.trial import unittest

from trekmail.imap import sessions
from trekmail.realm.errors import DirectoryUnavailable


class Account:
    def __init__(self, address):
        self.address = address


class Session:
    def __init__(self, address):
        self.account = None if address is None else Account(address)
        self.state = "auth"
        self.farewell = None

    def _close(self, farewell):
        if self.state == "broken":
            raise OSError("transport gone")
        self.farewell = farewell
        self.state = "logout"


class Directory:
    def __init__(self, existing):
        self.existing = set(existing)
        self.asked = []
        self.down = False
        self.broken = set()

    def mailbox(self, address):
        self.asked.append(address)
        if address in self.broken:
            raise sqlite3.OperationalError("database is locked")
        if self.down:
            return defer.fail(DirectoryUnavailable("ldap down"))
        return defer.succeed(object() if address in self.existing else None)


class RecheckTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.tracked = sessions.Sessions()
        self.alice = [self.tracked.track(Session("alice@example.com")) for _ in range(2)]
        self.bob = self.tracked.track(Session("bob@example.com"))
        self.anonymous = self.tracked.track(Session(None))
        self.directory = Directory({"alice@example.com", "bob@example.com"})
        self.recheck = sessions.MailboxRecheck(self.tracked, self.directory, self.clock, interval=5)
        self.recheck.startService()
        self.addCleanup(self.recheck.stopService)

    def test_gone_mailbox_sessions_closed_once_per_interval(self):
        self.clock.advance(5)
        self.assertEqual(self.directory.asked, ["alice@example.com", "bob@example.com"])
        self.assertEqual([s.farewell for s in self.alice], [None, None])
        self.directory.existing.discard("alice@example.com")
        self.clock.advance(4)
        self.assertEqual([s.farewell for s in self.alice], [None, None])
        self.clock.advance(1)
        self.assertEqual([s.farewell for s in self.alice], [sessions.GONE] * 2)
        self.assertIsNone(self.bob.farewell)
        self.assertIsNone(self.anonymous.farewell)
        self.clock.advance(5)
        self.assertEqual(self.directory.asked[-1:], ["bob@example.com"])

    def test_directory_down_closes_nothing(self):
        self.directory.down = True
        self.directory.existing.clear()
        self.clock.advance(5)
        self.assertEqual([s.farewell for s in self.alice + [self.bob]], [None] * 3)
        self.directory.down = False
        self.clock.advance(5)
        self.assertEqual([s.farewell for s in self.alice + [self.bob]], [sessions.GONE] * 3)

    def test_closed_sessions_drop_out(self):
        del self.alice[:]
        self.assertEqual(sorted(self.tracked.logged_in()), ["bob@example.com"])

    def test_a_failing_pass_is_logged_and_the_next_one_closes(self):
        self.directory.existing.clear()
        self.directory.broken = {"alice@example.com", "bob@example.com"}
        self.clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 2)
        self.assertEqual([s.farewell for s in self.alice + [self.bob]], [None] * 3)
        self.directory.broken.clear()
        self.clock.advance(5)
        self.assertEqual([s.farewell for s in self.alice + [self.bob]], [sessions.GONE] * 3)

    def test_one_mailbox_failing_does_not_spare_the_others(self):
        self.directory.existing.clear()
        self.directory.broken = {"alice@example.com"}
        self.clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(self.bob.farewell, sessions.GONE)

    def test_a_failing_close_is_logged_and_the_others_still_close(self):
        self.directory.existing.clear()
        self.alice[0].state = "broken"
        self.clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual([s.farewell for s in self.alice + [self.bob]], [None, sessions.GONE, sessions.GONE])
        self.alice[0].state = "auth"
        self.clock.advance(5)
        self.assertEqual(self.alice[0].farewell, sessions.GONE)
