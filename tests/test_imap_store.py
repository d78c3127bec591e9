"""
What keeps the shared mail store cheap without losing anything: the raw
message cache, flag changes saved in batches that survive a restart, a
selected session sharing its folder's UID list until its numbering
differs, expunged files out of C{cur/} at once when no session still
numbers them, and APPEND's rename made durable.
"""

import os
import sqlite3
import time

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from tests.imap_site import Site, message
from tests.test_imap_session import raw
from trekmail import durable
from trekmail.imap import index, store
from trekmail.imap.cache import MessageCache
from trekmail.imap.folder import Folder
from trekmail.imap.message import structures
from trekmail.imap.parser import Reader
from trekmail.imap.server import IMAPServer
from trekmail.mailstore import maildir_path


class MessageCacheTests(unittest.TestCase):
    def test_least_recently_used_goes_first(self):
        cache = MessageCache(16 * 100)
        cache.put("a", b"x" * 100)
        cache.put("b", b"y" * 100)
        self.assertEqual(cache.get("a"), b"x" * 100)
        for n in range(15):
            cache.put(n, b"z" * 100)
        self.assertIsNone(cache.get("b"))
        self.assertEqual(cache.get("a"), b"x" * 100)
        self.assertLessEqual(cache.size, cache.limit)

    def test_big_messages_and_missing_files_are_not_kept(self):
        cache = MessageCache(16 * 100)
        cache.put("big", b"x" * 101)
        cache.put("gone", None)
        self.assertEqual((cache.entries, cache.size), ({}, 0))

    def test_drop(self):
        cache = MessageCache(1600)
        cache.put("a", b"abc")
        cache.drop(["a", "never"])
        self.assertEqual((cache.get("a"), cache.size), (None, 0))


class FakeStore:
    """Index work that completes only when the test says so."""

    log = store.MailStore.log

    def __init__(self):
        self.calls = []
        self.clock = Clock()
        self.call_later = self.clock.callLater

    def run(self, function, *args):
        d = defer.Deferred()
        self.calls.append((function, args, d))
        return d


class FlagBatchTests(unittest.TestCase):
    def setUp(self):
        self.store = FakeStore()
        self.account = store.Account(self.store, "alice@example.com", "/nonexistent", "db")
        self.written = []
        self.patch(index, "update_flags_many", lambda db, batch: self.written.append(batch))

    def busy_worker(self):
        """Index work that is not small (a rename) goes to the worker and holds it until the test says so."""
        self.account.run_db(index.rename_folder, "/nonexistent", "INBOX", "Old")
        return self.store.calls.pop()[2]

    def test_changes_wait_for_company_then_are_written_at_once(self):
        self.account.save_flags("INBOX", [(1, "\\Seen", 5)], 5)
        self.account.save_flags("INBOX", [(2, "\\Seen", 6)], 6)
        self.assertEqual(self.written, [], "nothing written before the delay")
        self.store.clock.advance(store.FLAGS_DELAY)
        self.assertEqual(self.written, [[("INBOX", [(1, "\\Seen", 5)], 5), ("INBOX", [(2, "\\Seen", 6)], 6)]])
        self.assertEqual((self.store.calls, self.account.unsaved_flags()), ([], []), "on the reactor thread")
        self.account.save_flags("Sent", [(7, "", 7)], 7)
        self.store.clock.advance(store.FLAGS_DELAY)
        self.assertEqual(self.written[1:], [[("Sent", [(7, "", 7)], 7)]])

    def test_while_the_worker_has_the_account_changes_follow_its_work_there(self):
        renamed = self.busy_worker()
        self.account.save_flags("INBOX", [(1, "\\Seen", 5)], 5)
        self.account.save_flags("INBOX", [(2, "\\Seen", 6)], 6)
        self.store.clock.advance(store.FLAGS_DELAY)
        self.account.save_flags("Sent", [(7, "", 7)], 7)
        self.store.clock.advance(store.FLAGS_DELAY)
        self.assertEqual(self.written, [])
        self.assertEqual(len(self.store.calls), 1)
        function, args, first = self.store.calls[0]
        self.assertEqual((function, args),
                         (index.update_flags_many, ("db", [("INBOX", [(1, "\\Seen", 5)], 5),
                                                           ("INBOX", [(2, "\\Seen", 6)], 6)])))
        self.assertEqual(len(self.account.unsaved_flags()), 3)
        renamed.callback(None)
        first.callback(None)
        self.assertEqual(self.written, [[("Sent", [(7, "", 7)], 7)]], "what waited goes at once, the worker now idle")
        self.assertEqual(self.account.unsaved_flags(), [])

    def test_other_index_work_takes_waiting_changes_along_first(self):
        self.account.save_flags("INBOX", [(1, "\\Seen", 5)], 5)
        self.account.save_flags("INBOX", [(2, "\\Seen", 6)], 6)
        renamed = self.account.run_db(index.rename_folder, "/nonexistent", "INBOX", "Old")
        self.store.clock.advance(store.FLAGS_DELAY)
        self.assertEqual(len(self.store.calls), 1, "one turn of the worker")
        function, args, d = self.store.calls[0]
        self.assertEqual(function, store._flags_then)
        self.assertEqual(args, ("db", [("INBOX", [(1, "\\Seen", 5)], 5), ("INBOX", [(2, "\\Seen", 6)], 6)],
                                index.rename_folder, ("/nonexistent", "INBOX", "Old")))
        d.callback((None, "renamed"))
        self.assertEqual(self.successResultOf(renamed), "renamed")
        self.assertEqual(self.account.unsaved_flags(), [])

    def test_a_failed_flag_write_does_not_stop_the_work_after_it(self):
        def broken(db, batch):
            raise sqlite3.OperationalError("disk I/O error")
        self.patch(index, "update_flags_many", broken)
        failure, result = store._flags_then("db", [], lambda db, x: (db, x), (1,))
        self.assertIsInstance(failure.value, sqlite3.OperationalError)
        self.assertEqual(result, ("db", 1))

    def test_a_failed_write_is_logged_and_later_changes_still_saved(self):
        def broken(db, batch):
            raise sqlite3.OperationalError("disk I/O error")
        self.patch(index, "update_flags_many", broken)
        self.account.save_flags("INBOX", [(1, "\\Seen", 5)], 5)
        self.store.clock.advance(store.FLAGS_DELAY)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.patch(index, "update_flags_many", lambda db, batch: self.written.append(batch))
        self.account.save_flags("INBOX", [(2, "\\Seen", 6)], 6)
        self.store.clock.advance(store.FLAGS_DELAY)
        self.assertEqual(self.written, [[("INBOX", [(2, "\\Seen", 6)], 6)]])
        self.account.save_flags("INBOX", [(3, "\\Seen", 7)], 7)
        self.account.run_db(index.rename_folder, "/nonexistent", "INBOX", "Old")
        self.assertEqual(self.store.calls[0][0], store._flags_then)
        self.store.calls[0][2].callback((Failure(sqlite3.OperationalError("disk I/O error")), None))
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)


class IndexOrderTests(unittest.TestCase):
    """Small index work runs on the reactor thread, but never before this account's work on the worker."""

    def setUp(self):
        self.store = FakeStore()
        self.account = store.Account(self.store, "alice@example.com", "/nonexistent", "db")
        self.ran = []

    def work(self, label):
        return lambda db: self.ran.append(label) or label

    def test_small_work_runs_at_once_unless_the_worker_has_some(self):
        self.assertEqual(self.successResultOf(self.account.run_db(self.work("a"), rows=1)), "a")
        big = self.account.run_db(self.work("big"))
        after = self.account.run_db(self.work("b"), rows=1)
        self.assertEqual(self.ran, ["a"])
        self.assertEqual([call[0].__name__ for call in self.store.calls], ["<lambda>", "<lambda>"])
        for function, args, d in self.store.calls:
            d.callback(function(*args))
        self.assertEqual(self.ran, ["a", "big", "b"])
        self.assertEqual(self.successResultOf(big), "big")
        self.assertEqual(self.successResultOf(after), "b")
        self.account.run_db(self.work("c"), rows=1)
        self.assertEqual(self.ran[-1], "c")

    def test_a_failure_on_the_reactor_thread_is_the_deferred_s(self):
        def broken(db):
            raise sqlite3.OperationalError("disk I/O error")
        self.failureResultOf(self.account.run_db(broken, rows=1), sqlite3.OperationalError)

    def test_checkpoints_go_to_the_worker_with_what_follows_them(self):
        for n in range(store.CHECKPOINT_EVERY - 1):
            self.account.run_db(self.work(n), rows=1)
        self.assertEqual(self.store.calls, [])
        self.account.run_db(self.work("last"), rows=1)
        self.assertEqual([(call[0], call[1][0]) for call in self.store.calls],
                         [(index.checkpoint, "db"), (self.store.calls[1][0], "db")])
        self.assertNotIn("last", self.ran)

    def test_only_the_checkpoint_copies_the_wal_into_the_index(self):
        root = self.mktemp()
        db = index.open_index(root, 1700000000)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA wal_autocheckpoint").fetchone()[0], 0, "never on a commit")
        path = os.path.join(root, index.INDEX_NAME)
        before = os.path.getsize(path)
        for uid in range(1, 1500):
            index.insert_rows(db, "INBOX", [(uid, "f%d" % uid, "", uid, 10, 0)], uid + 1, uid)
        self.assertEqual(os.path.getsize(path), before)
        index.checkpoint(db)
        self.assertGreater(os.path.getsize(path), before)


class Factory:
    implicit_tls = True


class InMemoryAnswerTests(unittest.TestCase):
    """
    What the session has in memory is answered at once, without waiting
    on a worker (the Deferreds cost as much as the work); what it lacks
    still waits for the worker, and the answers are the same.
    """

    def setUp(self):
        self.store = FakeStore()
        self.store.run_files = self.store.run
        self.store.cache = MessageCache(1 << 20)
        self.store.seconds = lambda: 0
        self.account = store.Account(self.store, "alice@example.com", "/nonexistent", "db")
        self.raw = message("cached")
        rows = [(1, "m1", "\\Seen", 1, len(self.raw), 0), (2, "m2", "", 1, len(self.raw), 0)]
        folder = Folder(self.account, "INBOX", (7, 3, 1), rows, [])
        folder.watched = True
        folder.structures = {1: structures(self.raw), 2: structures(self.raw)}
        self.account.folders["INBOX"] = folder
        self.store.cache.put(("/nonexistent", "m1"), self.raw)
        self.server = IMAPServer(Factory())
        self.server.transport = StringTransport()
        self.server.state = "auth"
        self.server.account = self.account

    def command(self, line):
        self.server.transport.clear()
        self.server.dataReceived(line + b"\r\n")
        return self.server.transport.value()

    def test_answers_from_memory_at_once(self):
        self.assertIn(b"a OK [READ-WRITE] Select completed", self.command(b"a SELECT INBOX"))
        self.assertEqual(self.command(b"b FETCH 1 (UID FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])"),
                         b"* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {19}\r\n"
                         b"Subject: cached\r\n\r\n)\r\nb OK Fetch completed\r\n")
        self.assertEqual(self.command(b"c STATUS INBOX (MESSAGES)"),
                         b'* STATUS "INBOX" (MESSAGES 2)\r\nc OK Status completed\r\n')
        self.assertEqual(self.command(b"d NOOP"), b"d OK NOOP completed\r\n")
        self.assertEqual(self.store.calls, [])

    def test_flags_resync(self):
        """FETCH of FLAGS alone, a client's resync, over runs of the view's numbering and over gaps."""
        self.command(b"a SELECT INBOX")
        expected = b"* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS ())\r\n"
        self.assertEqual(self.command(b"b FETCH 1:* (FLAGS)"), expected + b"b OK Fetch completed\r\n")
        self.assertEqual(self.command(b"c UID FETCH 2,1 (FLAGS)"),
                         b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n* 2 FETCH (UID 2 FLAGS ())\r\n"
                         b"c OK Fetch completed\r\n")
        self.assertEqual(self.command(b"d UID FETCH 2:9 (UID FLAGS)"),
                         b"* 2 FETCH (UID 2 FLAGS ())\r\nd OK Fetch completed\r\n")
        self.assertEqual(self.command(b"e FETCH 2 (FLAGS UID)"),
                         b"* 2 FETCH (FLAGS () UID 2)\r\ne OK Fetch completed\r\n")
        self.server.view.recent = frozenset([2])
        self.assertEqual(self.command(b"f FETCH 2 (FLAGS)"),
                         b"* 2 FETCH (FLAGS (\\Recent))\r\nf OK Fetch completed\r\n")

    def test_no_deferred_when_nothing_waits(self):
        self.command(b"a SELECT INBOX")
        for handler, arguments in ((self.server.do_FETCH, b"1:2 (FLAGS ENVELOPE BODYSTRUCTURE)"),
                                   (self.server.do_FETCH, b"1 (BODY[] BODY.PEEK[HEADER])"),
                                   (self.server.do_SELECT, b"INBOX"),
                                   (self.server.do_STATUS, b"INBOX (UNSEEN)"), (self.server.do_NOOP, b"")):
            self.assertIsInstance(handler("t", Reader(arguments, [arguments]), False), bytes, arguments.decode())
        self.assertIsInstance(self.server.do_FETCH("t", Reader(b"2 (BODY[])", [b""]), False), defer.Deferred)

    def test_what_is_not_in_memory_waits_for_the_worker(self):
        self.command(b"a SELECT INBOX")
        self.assertEqual(self.command(b"b UID FETCH 2 (RFC822.SIZE BODY.PEEK[])"), b"")
        function, args, d = self.store.calls.pop()
        self.assertEqual((function, args), (index.read_messages, ("/nonexistent", "INBOX", ["m2"])))
        d.callback({"m2": self.raw})
        self.assertEqual(self.server.transport.value(), b"* 2 FETCH (UID 2 RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n"
                         b"b OK Fetch completed\r\n" % (len(self.raw), len(self.raw), self.raw))
        self.assertEqual(self.command(b'c LIST "" *'), b"")
        self.store.calls.pop()[2].callback(index.Listing(("INBOX",), ("INBOX",)))
        self.assertIn(b"c OK LIST completed", self.server.transport.value())
        self.assertIn(b"d OK LIST completed", self.command(b'd LIST "" *'))
        self.assertEqual(self.store.calls, [])


class SharedStoreTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()
        self.root = maildir_path(self.site.config.data_dir, "alice@example.com")

    def sessions(self):
        return [server for server, lost in self.site.factories["imaps"].connections if not lost.called]

    def two_sessions_on_three_messages(self):
        """Blocking: two clients with INBOX selected after one of them appended three messages."""
        a, b = self.site.connect(), self.site.connect()
        for n in range(3):
            a.append("INBOX", None, None, message("m%d" % n))
        a.select("INBOX")
        b.select("INBOX")
        return a, b

    @defer.inlineCallbacks
    def test_flags_from_several_sessions_survive_a_restart(self):
        site = self.site

        def work():
            a, b = self.two_sessions_on_three_messages()
            a.store("1", "+FLAGS", "(\\Seen)")
            b.store("2", "+FLAGS", "(\\Flagged $Work)")
            a.store("3", "+FLAGS", "(\\Answered)")
            b.store("1", "-FLAGS", "(\\Seen)")
            a.logout()
            b.logout()

        yield site.in_thread(work)
        yield site.store.stop()
        db = sqlite3.connect(os.path.join(self.root, index.INDEX_NAME))
        self.addCleanup(db.close)
        rows = db.execute("SELECT uid, flags FROM messages WHERE folder = 'INBOX' ORDER BY uid").fetchall()
        self.assertEqual(rows, [(1, ""), (2, "$Work \\Flagged"), (3, "\\Answered")])

    @defer.inlineCallbacks
    def test_idle_sessions_share_the_folder_uid_list(self):
        site = self.site

        def work():
            a, b = self.two_sessions_on_three_messages()
            a.append("INBOX", None, None, message("new"))
            a.store("1", "+FLAGS", "(\\Deleted)")
            a.expunge()
            return a, b

        a, b = yield site.in_thread(work)
        views = [server.view for server in self.sessions()]
        folder = views[0].folder
        told, untold = sorted(views, key=lambda v: v.uids is not folder.uids)
        self.assertIs(told.uids, folder.uids)
        self.assertEqual(untold.uids, [1, 2, 3], "the other session has heard of neither change yet")
        self.assertEqual(folder.uids, [2, 3, 4])

        def noop():
            lines = raw(b, b"NOOP")[0]
            a.logout()
            b.logout()
            return lines

        lines = yield site.in_thread(noop)
        self.assertIn(b"* 1 EXPUNGE", lines)
        self.assertIn(b"* 3 EXISTS", lines)
        self.assertIs(untold.uids, folder.uids)

    @defer.inlineCallbacks
    def test_expunge_takes_unneeded_files_out_of_cur_at_once_and_fetch_uses_the_cache(self):
        site = self.site

        def work():
            client = site.connect()
            client.append("INBOX", None, None, message("cached", body="from memory\r\n"))
            client.append("INBOX", None, None, message("doomed"))
            client.select("INBOX")
            for entry in os.listdir(os.path.join(self.root, "cur")):
                if b"cached" in open(os.path.join(self.root, "cur", entry), "rb").read():
                    os.rename(os.path.join(self.root, "cur", entry), os.path.join(self.root, entry))
            body = raw(client, b"FETCH 1 (BODY.PEEK[TEXT])")
            client.store("2", "+FLAGS", "(\\Deleted)")
            client.expunge()
            files = os.listdir(os.path.join(self.root, "cur")), os.listdir(os.path.join(self.root, "tmp"))
            client.logout()
            return body, files

        body, files = yield site.in_thread(work)
        self.assertIn(b"from memory", b"".join(body[0]))
        self.assertEqual(files[0], [])
        self.assertEqual(len(files[1]), 1, "kept as a spare for the next APPEND (tests/test_imap_spares.py)")


class LockedIndexTests(unittest.TestCase):
    """An index write lock held outside the server: the reactor waits a quarter second, not ten, and the client hears
    to try again."""

    def setUp(self):
        self.site = Site(self)
        self.site.account()
        self.root = maildir_path(self.site.config.data_dir, "alice@example.com")

    @defer.inlineCallbacks
    def test_append_while_a_tool_holds_the_index(self):
        client = yield self.site.in_thread(self.site.connect)
        yield self.site.in_thread(client.append, "INBOX", None, None, message("before"))
        tool = sqlite3.connect(os.path.join(self.root, index.INDEX_NAME), isolation_level=None)
        self.addCleanup(tool.close)
        tool.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        locked = yield self.site.in_thread(raw_append, client, message("during"))
        waited = time.monotonic() - started
        tool.execute("ROLLBACK")
        after = yield self.site.in_thread(raw_append, client, message("after"))
        yield self.site.in_thread(client.logout)
        self.assertIn(b"NO [UNAVAILABLE]", locked)
        self.assertLess(waited, 5)
        self.assertIn(b"OK [APPENDUID", after)


def raw_append(client, data):
    tag = client._new_tag()
    client.send(tag + b" APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    while True:
        line = client.readline()
        if line.startswith(tag + b" "):
            return line


class DurableAppendTests(unittest.TestCase):
    def test_new_names_are_fsynced(self):
        root = self.mktemp()
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(root, sub))
        synced = []
        self.patch(index, "fsync_directory", synced.append)
        self.patch(durable, "fsync_directory", synced.append)
        name = index.write_message(root, "INBOX", message(), 1700000000, 1700000000)
        self.assertEqual(synced, [os.path.join(root, "cur")])
        index.link_messages(root, "INBOX", "INBOX", [name], 1700000001)
        self.assertEqual(synced, [os.path.join(root, "cur")] * 2)
