"""
An APPEND writes into the file of a message expunged before it (an inode
neither freed nor allocated), but never into one still linked from
another folder, and never beyond what the pool may hold.
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import Site, message
from trekmail.imap import index, spares
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
        self.private = os.path.join(self.dir, "new")
        with open(self.path, "wb") as f:
            f.write(b"old message")

    def test_an_unshared_file_comes_back_empty_under_its_new_name(self):
        fd = spares.reopen(self.path, self.private)
        self.addCleanup(os.close, fd)
        self.assertEqual(os.fstat(fd).st_size, 0)
        self.assertEqual(os.fstat(fd).st_ino, os.stat(self.private).st_ino)
        self.assertFalse(os.path.exists(self.path), "the old name is gone before the first byte is written")

    def test_a_file_linked_elsewhere_is_left_to_its_other_name(self):
        other = os.path.join(self.dir, "copy")
        os.link(self.path, other)
        self.assertIsNone(spares.reopen(self.path, self.private))
        self.assertEqual(sorted(os.listdir(self.dir)), ["copy"])
        with open(other, "rb") as f:
            self.assertEqual(f.read(), b"old message")

    def test_a_vanished_file_is_no_spare(self):
        os.unlink(self.path)
        self.assertIsNone(spares.reopen(self.path, self.private))
        self.assertEqual(os.listdir(self.dir), [])


class CopyDuringRewriteTests(unittest.TestCase):
    """
    COPY (L{index.link_messages}) and APPEND (L{index.write_message})
    run on different file threads: a COPY of a message parked in C{tmp/}
    (a closing session let go of it, so it became a spare) may reach the
    file while an APPEND is writing another message into it.
    """

    NOW = 1234567890.0
    OLD = b"Subject: expunged\r\n\r\nthe old message\r\n"
    NEW = b"Subject: appended\r\n\r\nanother message\r\n"

    def setUp(self):
        self.root = self.mktemp()
        db = index.open_index(self.root, self.NOW)
        index.create_folder(db, self.root, "Saved", self.NOW)
        db.close()
        self.name = index.write_message(self.root, "INBOX", self.OLD, 1000, self.NOW)
        self.spare = os.path.join(self.root, "tmp", self.name)
        os.rename(os.path.join(self.root, "cur", self.name), self.spare)

    def read(self, folder, name):
        with open(os.path.join(self.root, folder, "cur", name), "rb") as f:
            return f.read()

    def test_a_copy_reaching_the_file_mid_rewrite_links_nothing(self):
        real_write_file = index.write_file
        copies = []

        def copy_then_write(path, *chunks, **kwargs):
            copies.extend(index.link_messages(self.root, "INBOX", "Saved", [self.name], self.NOW + 1))
            return real_write_file(path, *chunks, **kwargs)
        self.patch(index, "write_file", copy_then_write)
        appended = index.write_message(self.root, "INBOX", self.NEW, 2000, self.NOW + 2, self.spare)
        self.assertEqual(self.read("", appended), self.NEW)
        self.assertEqual(copies, [None], "the expunged message is gone; the appended one must not pose as its copy")
        self.assertEqual(os.listdir(os.path.join(self.root, ".Saved", "cur")), [])
        self.assertEqual(os.listdir(os.path.join(self.root, "tmp")), [])

    def test_a_copy_made_before_the_rewrite_keeps_the_old_message(self):
        (copy,) = index.link_messages(self.root, "INBOX", "Saved", [self.name], self.NOW + 1)
        appended = index.write_message(self.root, "INBOX", self.NEW, 2000, self.NOW + 2, self.spare)
        self.assertEqual(self.read(".Saved", copy), self.OLD)
        self.assertEqual(self.read("", appended), self.NEW)
        self.assertNotEqual(os.stat(os.path.join(self.root, "cur", appended)).st_ino,
                            os.stat(os.path.join(self.root, ".Saved", "cur", copy)).st_ino)


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
            client.create("Saved")
            client.append("INBOX", None, None, kept)
            client.select("INBOX")
            client.copy("1", "Saved")
            self.expunge_all(client)
            client.append("INBOX", None, None, message("new"))
            client.select("Saved")
            fetched = client.fetch("1", "(BODY.PEEK[])")[1][0][1]
            client.logout()
            return fetched

        fetched = yield self.site.in_thread(work)
        self.assertEqual(fetched, kept)
        archived = self.files("cur", ".Saved")
        self.assertEqual(len(archived), 1)
        self.assertNotEqual(list(archived.values()), list(self.files("cur").values()))
        with open(os.path.join(self.root, ".Saved", "cur", list(archived)[0]), "rb") as f:
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
