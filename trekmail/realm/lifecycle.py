"""
Deleting accounts, domains and mailboxes, and renaming mailboxes: the
rows and the files that belong to them, in one transaction each.

The files move while the transaction is open and before it commits: a
failure anywhere in a verb rolls the rows back and moves back every file
the verb had moved (L{retention.Moves}), so the database and the disk
never disagree about whether a mailbox exists.  Inputs are assumed checked by L{trekmail.realm.admin}.

What a delete leaves: the Maildir and DAV data set aside for the retention
period (L{retention}); the queue's entries, which were accepted and are
delivered as any other (mail to a deleted mailbox fails at its next
attempt with C{5.1.1 no such mailbox here} and is bounced to its
sender, as for any unknown mailbox); the sending counters, which age out.
"""


from trekmail.realm import dkimselectors, retention, store
from trekmail.realm.database import transaction
from trekmail.realm.errors import Duplicate, InvalidInput


def _mailbox_rows_and_files(db, data_dir, address, now, moves):
    db.execute("DELETE FROM mailboxes WHERE address = ?", (address,))
    return retention.set_aside(data_dir, address, now, moves)


def delete_mailbox(db, data_dir, address, now):
    with retention.Moves() as moves, transaction(db):
        store.mailbox_get(db, address)
        kept = _mailbox_rows_and_files(db, data_dir, address, now, moves)
    return {"deleted": address, "mail_kept_in": kept}


def _domain_rows_and_files(db, data_dir, domain, now, moves, keys):
    """
    The domain's mailboxes (set aside), its aliases, its row (with its
    route), its suppressions and its DKIM selectors; C{keys} gets the
    selectors whose key files go once the transaction commits (a key file
    whose row is gone can sign nothing, and the rows must not come back
    for it).
    """
    kept = {}
    for mailbox in store.mailbox_list(db, domain.name):
        kept[mailbox.address] = _mailbox_rows_and_files(db, data_dir, mailbox.address, now, moves)
    db.execute("DELETE FROM hard_bounces WHERE domain = ?", (domain.name,))
    db.execute("DELETE FROM aliases WHERE domain = ?", (domain.name,))
    keys.extend(dkimselectors.delete_rows(db, domain.name))
    db.execute("DELETE FROM domains WHERE name = ?", (domain.name,))
    return kept


def delete_domain(db, data_dir, name, force, now):
    with retention.Moves() as moves, transaction(db):
        domain = store.domain_get(db, name)
        mailboxes = store.mailbox_list(db, name)
        if mailboxes and not force:
            raise InvalidInput(
                "domain %s still has %d mailbox(es) (%s): delete them first, or repeat with --force to delete them too"
                % (name, len(mailboxes), ", ".join(m.address for m in mailboxes[:5])
                   + (", ..." if len(mailboxes) > 5 else "")))
        keys = []
        kept = _domain_rows_and_files(db, data_dir, domain, now, moves, keys)
    dkimselectors.remove_key_files(data_dir, keys)
    return {"deleted": name, "mailboxes_deleted": sorted(kept), "mail_kept_in": sorted(k for k in kept.values() if k)}


def delete_account(db, data_dir, account_id, now):
    """
    Everything under the account.  Its SMTP profiles' sealed passwords are
    overwritten before their rows go, with sqlite's C{secure_delete} on, so
    the freed pages hold zeros rather than the sealed text; the WAL is then
    checkpointed so its frames do not keep it either.
    """
    previous = db.execute("PRAGMA secure_delete").fetchone()[0]
    db.execute("PRAGMA secure_delete = ON")
    try:
        with retention.Moves() as moves, transaction(db):
            account = store.account_get(db, account_id)
            domains = store.domain_list(db, account.id)
            kept = {}
            keys = []
            for domain in domains:
                kept.update(_domain_rows_and_files(db, data_dir, domain, now, moves, keys))
            profiles = [r[0] for r in db.execute(
                "SELECT id FROM smtp_profiles WHERE account_id = ? ORDER BY id", (account.id,))]
            db.execute("UPDATE smtp_profiles SET password_sealed = zeroblob(length(password_sealed)),"
                       " username = '' WHERE account_id = ?", (account.id,))
            db.execute("DELETE FROM smtp_profiles WHERE account_id = ?", (account.id,))
            db.execute("DELETE FROM send_recent WHERE account_id = ?", (account.id,))
            db.execute("DELETE FROM accounts WHERE id = ?", (account.id,))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.execute("PRAGMA secure_delete = %d" % (int(previous),))
    dkimselectors.remove_key_files(data_dir, keys)
    return {
        "deleted": account.id,
        "domains_deleted": [d.name for d in domains],
        "mailboxes_deleted": sorted(kept),
        "profiles_wiped": profiles,
        "mail_kept_in": sorted(k for k in kept.values() if k),
    }


def rename_mailbox(db, data_dir, old, new):
    """The address changes; the password, the mail, the DAV data and the aliases and catch-alls naming it stay with the mailbox."""
    with retention.Moves() as moves, transaction(db):
        mailbox = store.mailbox_get(db, old)
        if store.mailbox_find(db, new) is not None:
            raise Duplicate("mailbox %s already exists" % (new,))
        old_domain = store.domain_get(db, mailbox.domain)
        new_domain_name = new.rpartition("@")[2]
        new_domain = store.domain_find(db, new_domain_name)
        if new_domain is None:
            raise InvalidInput("domain %s is not hosted here" % (new_domain_name,))
        if new_domain.account_id != old_domain.account_id:
            raise InvalidInput(
                "%s belongs to another account: a mailbox can be renamed only within its own account's domains"
                % (new_domain.name,))
        db.execute("UPDATE mailboxes SET address = ?, domain = ? WHERE address = ?",
                   (new, new_domain.name, mailbox.address))
        store.retarget(db, mailbox.address, new)
        retention.move_mailbox(data_dir, mailbox.address, new, moves)
    return store.mailbox_get(db, new)
