"""
Whether local delivery may create a mailbox's Maildir that is not on
disk yet.

A delivery looks its recipient up, then writes on the writer thread; a
C{mailbox rename} or C{delete} committing in between moves the Maildir
away (L{trekmail.realm.lifecycle}, inside its write transaction), and a
delivery creating the missing directory would bring the old address's
Maildir back: mail nobody can read, and a later C{mailbox add} of the
address refused for the data on disk.  So a missing Maildir is created
only under the realm database's write lock, which those verbs hold while
they move the files, and only if the mailbox is still there; otherwise
the write fails like any other (C{451}), and the retry finds the address
gone.  An existing Maildir needs no claim: a write into a directory
moved meanwhile fails, or lands in the moved mailbox.
"""

import sqlite3

from trekmail.realm import store

BUSY_TIMEOUT = 10
"""Seconds a claim waits for a lifecycle verb's transaction (they move directories: quick)."""


def create_freely(address, create):
    """The claim where no verb renames or deletes mailboxes (the LDAP backend owns them)."""
    create()


class RealmClaim:
    """The claim of the sqlite realm at C{path}: C{claim(address, create)}, on the writer thread."""

    def __init__(self, path):
        self.path = path

    def __call__(self, address, create):
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if store.mailbox_find(db, address) is None:
                    raise FileNotFoundError("mailbox %s was renamed or deleted" % (address,))
                create()
            finally:
                db.execute("ROLLBACK")
        finally:
            db.close()
