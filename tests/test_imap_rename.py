"""
RENAME moves exactly the folder and its children (trekmail/imap/index.py):
SQL LIKE made "_" a wildcard and ignored case, so unrelated folders moved
with their mail; and a session that had watched a renamed folder leaked
its connection slots at logout.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import Site, message


class RenameTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_only_the_folder_and_its_children_move(self):
        site = Site(self)
        site.account()

        def work():
            client = site.connect()
            for name in ("a_b", "a_b.kid", "axb", "axb.kid", "A_B", "A_B.kid"):
                client.create(name)
            client.append("axb.kid", None, None, message("stays"))
            renamed = client.rename("a_b", "c")[0]
            names = sorted(line.rsplit(b" ", 1)[-1].strip(b'"') for line in client.list('""', "*")[1])
            status = client.status("axb.kid", "(MESSAGES)")[1]
            client.logout()
            return renamed, names, status

        renamed, names, status = yield site.in_thread(work)
        self.assertEqual(renamed, "OK")
        for name in (b"c", b"c.kid", b"axb", b"axb.kid", b"A_B", b"A_B.kid"):
            self.assertIn(name, names)
        self.assertNotIn(b"a_b", names)
        self.assertEqual(status, [b'"axb.kid" (MESSAGES 1)'])

    @defer.inlineCallbacks
    def test_renaming_a_watched_folder_frees_the_slot_at_logout(self):
        site = Site(self, per_address=2)
        site.account()

        def work(round):
            client = site.connect()
            client.create("Box%d" % round)
            client.select("Box%d" % round)
            client.rename("Box%d" % round, "Moved%d" % round)
            client.logout()

        for round in range(4):
            yield site.in_thread(work, round)
        status = yield site.in_thread(lambda: site.connect().logout()[0])
        self.assertEqual(status, "BYE")
