"""
An APPEND writes into the file of a message expunged before it (an inode
neither freed nor allocated), but never into one still linked from
another folder, and never beyond what the pool may hold.
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import Site, message
from trekmail.imap import spares
from trekmail.mailstore import maildir_path


class SpareFilesTests(unittest.TestCase):
    def test_keeps_up_to_the_limit_counting_moves_under_way(self):
        pool = spares.SpareFiles(limit=3)
        pending = defer.Deferred()
        asked = []

        def move(keep):
            asked.append(keep)
            return pending if len(asked) == 1 else defer.succeed(["/tmp/%s" % k for k in sorted(keep)])
        pool.offer([("a", 10), ("b", 10)], move)
        pool.offer([("c", 10), ("d", 10)], move)
        self.assertEqual(asked, [{"a", "b"}, {"c"}])
        pending.callback(["/tmp/a", "/tmp/b"])
        self.assertEqual(sorted(pool.drain()), ["/tmp/a", "/tmp/b", "/tmp/c"])

    def test_big_files_are_not_kept(self):
        pool = spares.SpareFiles()
        asked = []
        pool.offer([("big", spares.LARGEST + 1), ("small", 100)], lambda keep: asked.append(keep) or defer.succeed([]))
        self.assertEqual(asked, [{"small"}])

    def test_a_failed_move_frees_its_places_and_keeps_nothing(self):
        pool = spares.SpareFiles(limit=1)
        d = pool.offer([("a", 1)], lambda keep: defer.fail(OSError("disk gone")))
        self.failureResultOf(d, OSError)
        asked = []
        pool.offer([("b", 1)], lambda keep: asked.append(keep) or defer.succeed(["/tmp/b"]))
        self.assertEqual(asked, [{"b"}])
        self.assertEqual(pool.take(), "/tmp/b")
        self.assertIsNone(pool.take())


class ReopenTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "dead")
        with open(self.path, "wb") as f:
            f.write(b"old message")

    def test_an_unshared_file_comes_back_empty(self):
        fd = spares.reopen(self.path)
        self.addCleanup(os.close, fd)
        self.assertEqual(os.fstat(fd).st_size, 0)

    def test_a_file_linked_elsewhere_is_left_to_its_other_name(self):
        other = os.path.join(self.dir, "copy")
        os.link(self.path, other)
        self.assertIsNone(spares.reopen(self.path))
        self.assertFalse(os.path.exists(self.path))
        with open(other, "rb") as f:
            self.assertEqual(f.read(), b"old message")

    def test_a_vanished_file_is_no_spare(self):
        os.unlink(self.path)
        self.assertIsNone(spares.reopen(self.path))


class AppendIntoSpareTests(unittest.TestCase):
    """Real sessions (imaplib over TLS) and real files."""

    def setUp(self):
        self.site = Site(self)
        self.site.account()
        self.root = maildir_path(self.site.config.data_dir, "alice@example.com")

    def files(self, sub, folder=""):
        path = os.path.join(self.root, folder, sub)
        return {name: os.stat(os.path.join(path, name)).st_ino for name in os.listdir(path)}

    def expunge_all(self, client):
        client.store("1:*", "+FLAGS", "(\\Deleted)")
        client.expunge()

    @defer.inlineCallbacks
    def test_an_append_after_an_expunge_writes_into_the_expunged_file(self):
        old = message("old", body="long gone\r\n" * 500)
        new = message("new")

        def work():
            client = self.site.connect()
            client.append("INBOX", None, None, old)
            client.select("INBOX")
            self.expunge_all(client)
            spare = self.files("tmp")
            client.append("INBOX", None, None, new)
            written = self.files("cur")
            fetched = client.fetch("1", "(BODY.PEEK[])")[1][0][1]
            client.logout()
            return spare, written, fetched

        spare, written, fetched = yield self.site.in_thread(work)
        self.assertEqual(len(spare), 1)
        self.assertEqual(list(written.values()), list(spare.values()), "the same inode")
        self.assertEqual(self.files("tmp"), {})
        with open(os.path.join(self.root, "cur", list(written)[0]), "rb") as f:
            self.assertEqual(f.read(), new)
        self.assertEqual(fetched, new)

    @defer.inlineCallbacks
    def test_a_copy_in_another_folder_is_never_written_over(self):
        kept = message("kept", body="keep me\r\n" * 50)

        def work():
            client = self.site.connect()
            client.create("Archive")
            client.append("INBOX", None, None, kept)
            client.select("INBOX")
            client.copy("1", "Archive")
            self.expunge_all(client)
            client.append("INBOX", None, None, message("new"))
            client.select("Archive")
            fetched = client.fetch("1", "(BODY.PEEK[])")[1][0][1]
            client.logout()
            return fetched

        fetched = yield self.site.in_thread(work)
        self.assertEqual(fetched, kept)
        archived = self.files("cur", ".Archive")
        self.assertEqual(len(archived), 1)
        self.assertNotEqual(list(archived.values()), list(self.files("cur").values()))
        with open(os.path.join(self.root, ".Archive", "cur", list(archived)[0]), "rb") as f:
            self.assertEqual(f.read(), kept)

    @defer.inlineCallbacks
    def test_spares_are_deleted_when_the_account_closes(self):
        closed = defer.Deferred()
        self.site.store.closed = closed.callback

        def work():
            client = self.site.connect()
            for n in range(3):
                client.append("INBOX", None, None, message("m%d" % n))
            client.select("INBOX")
            self.expunge_all(client)
            spare = self.files("tmp")
            client.logout()
            return spare

        spare = yield self.site.in_thread(work)
        self.assertEqual(len(spare), 3)
        yield closed
        self.assertEqual(self.files("tmp"), {})
