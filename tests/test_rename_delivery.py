"""
Local delivery to a mailbox renamed (or deleted) after its recipient was
looked up: the old address's Maildir is not brought back.  A missing
Maildir is created only under the realm's write lock, and only while the
mailbox exists (trekmail.queue.maildirclaim); the wiring gives the queue
that claim for the sqlite realm.
"""

import os
import threading

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.support import example, realm
from trekmail.imap import index
from trekmail.mailstore import maildir_path
from trekmail.queue.maildir import deliver_batch
from trekmail.queue.maildirclaim import RealmClaim
from trekmail.realm import database
from trekmail.service import build_queue


class RenamedMailboxDeliveryTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, _ = realm(self)
        example(self.admin)
        self.claim = RealmClaim(self.config.database_path)

    def deliver(self, address):
        [result] = deliver_batch(self.config.data_dir, "mail.test", [(address, "", b"Subject: x\r\n\r\n")],
                                 Clock().seconds, claim=self.claim)
        return result

    def test_a_renamed_mailbox_old_maildir_is_not_recreated(self):
        self.assertIsNone(self.deliver("alice@example.com"))
        self.admin.mailbox_rename("alice@example.com", "alicia@example.com")
        self.assertIsInstance(self.deliver("alice@example.com"), OSError)
        self.assertFalse(os.path.lexists(maildir_path(self.config.data_dir, "alice@example.com")))
        self.assertEqual(len(os.listdir(os.path.join(maildir_path(self.config.data_dir, "alicia@example.com"), "new"))),
                         1)

    def test_a_delivery_waits_for_a_rename_under_way(self):
        writer = database.connect(self.config.database_path)
        self.addCleanup(writer.close)
        with database.transaction(writer):
            writer.execute("UPDATE mailboxes SET address = 'alicia@example.com' WHERE address = 'alice@example.com'")
            results = []
            thread = threading.Thread(target=lambda: results.append(self.deliver("alice@example.com")))
            thread.start()
            thread.join(0.2)
            self.assertTrue(thread.is_alive(), "the claim waits for the lock the rename holds")
        thread.join(5)
        self.assertIsInstance(results[0], OSError)
        self.assertFalse(os.path.lexists(maildir_path(self.config.data_dir, "alice@example.com")))

    def test_the_wiring_claims_for_the_sqlite_realm(self):
        queue = build_queue(self.config, Clock(), None, None)
        self.assertEqual(queue.mailboxes.claim.path, self.config.database_path)


class RenamedUnderASessionTests(unittest.TestCase):
    def test_a_create_on_the_old_address_does_not_recreate_its_maildir(self):
        data = self.mktemp()
        old, new = os.path.join(data, "old"), os.path.join(data, "new")
        db = index.open_index(old, 1e9)
        self.addCleanup(db.close)
        os.rename(old, new)
        self.assertRaises(FileNotFoundError, index.create_folder, db, old, "Projects", 1e9)
        self.assertFalse(os.path.lexists(old))
        self.assertIsNone(db.execute("SELECT 1 FROM folders WHERE name = 'Projects'").fetchone())
