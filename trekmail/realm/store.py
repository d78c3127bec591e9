"""
Queries on the realm tables.

Each function takes the sqlite connection first, so the CLI calls it
directly and the server runs the very same function on the database
thread (L{ThreadedDatabase.run}).  Input is assumed validated by
L{trekmail.realm.admin}; these functions only enforce what the database
itself must (existence, uniqueness).
"""

import datetime
import json

from trekmail.realm.database import transaction
from trekmail.realm.errors import Duplicate, NotFound
from trekmail.realm.model import Account, Alias, Domain, Mailbox, MailboxContext


def _account(row):
    return Account(
        id=row["id"],
        owner_email=row["owner_email"],
        owner_verified=bool(row["owner_verified"]),
        registered=datetime.date.fromisoformat(row["registered"]),
        plan=row["plan"],
        paid=bool(row["paid"]),
        suspension=row["suspension"],
        default_route=row["default_route"],
    )


def _domain(row):
    return Domain(
        name=row["name"],
        account_id=row["account_id"],
        created=row["created"],
        dkim_selector=row["dkim_selector"],
        dkim_public_key=row["dkim_public_key"],
        dns_status=row["dns_status"],
        route=row["route"],
        catchall=row["catchall"],
        dkim_ed25519_selector=row["dkim_ed25519_selector"],
    )


def _mailbox(row):
    return Mailbox(
        address=row["address"],
        domain=row["domain"],
        password_hash=row["password_hash"],
        paused=bool(row["paused"]),
    )


def account_add(db, owner_email, plan, paid, registered, verified):
    with transaction(db):
        if db.execute("SELECT 1 FROM accounts WHERE owner_email = ?", (owner_email,)).fetchone():
            raise Duplicate("an account owned by %s already exists" % (owner_email,))
        cursor = db.execute(
            "INSERT INTO accounts (owner_email, owner_verified, registered, plan, paid)"
            " VALUES (?, ?, ?, ?, ?)",
            (owner_email, int(verified), registered.isoformat(), plan, int(paid)),
        )
        return account_get(db, cursor.lastrowid)


def account_get(db, account_id):
    row = db.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        raise NotFound("no account with id %s" % (account_id,))
    return _account(row)


def account_list(db):
    return [_account(r) for r in db.execute("SELECT * FROM accounts ORDER BY id")]


_ACCOUNT_COLUMNS = ("plan", "owner_verified", "paid", "suspension", "default_route")


def account_update(db, account_id, **changes):
    """Set the given columns of one account; C{None} values are written as NULL."""
    unknown = set(changes) - set(_ACCOUNT_COLUMNS)
    if unknown:
        raise ValueError("not account columns: %s" % (sorted(unknown),))
    with transaction(db):
        account_get(db, account_id)
        for column, value in changes.items():
            db.execute("UPDATE accounts SET %s = ? WHERE id = ?" % (column,), (value, account_id))
        return account_get(db, account_id)


def domain_add(db, name, account_id, created, dkim_selector, dkim_public_key, route=None):
    with transaction(db):
        account_get(db, account_id)
        if db.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone():
            raise Duplicate("domain %s already exists" % (name,))
        db.execute(
            "INSERT INTO domains (name, account_id, created, dkim_selector, dkim_public_key, route)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, account_id, created, dkim_selector, dkim_public_key, route),
        )
        return domain_get(db, name)


def domain_get(db, name):
    row = db.execute("SELECT * FROM domains WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound("no domain %s" % (name,))
    return _domain(row)


def domain_find(db, name):
    row = db.execute("SELECT * FROM domains WHERE name = ?", (name,)).fetchone()
    return None if row is None else _domain(row)


def domain_list(db, account_id=None):
    if account_id is None:
        rows = db.execute("SELECT * FROM domains ORDER BY name")
    else:
        rows = db.execute("SELECT * FROM domains WHERE account_id = ? ORDER BY name", (account_id,))
    return [_domain(r) for r in rows]


_DOMAIN_COLUMNS = ("dns_status", "route", "catchall")


def domain_update(db, name, **changes):
    unknown = set(changes) - set(_DOMAIN_COLUMNS)
    if unknown:
        raise ValueError("not domain columns: %s" % (sorted(unknown),))
    with transaction(db):
        domain_get(db, name)
        for column, value in changes.items():
            db.execute("UPDATE domains SET %s = ? WHERE name = ?" % (column,), (value, name))
        return domain_get(db, name)


def mailbox_add(db, address, domain, password_hash, created):
    with transaction(db):
        domain_get(db, domain)
        if db.execute("SELECT 1 FROM mailboxes WHERE address = ?", (address,)).fetchone():
            raise Duplicate("mailbox %s already exists" % (address,))
        db.execute(
            "INSERT INTO mailboxes (address, domain, password_hash, created) VALUES (?, ?, ?, ?)",
            (address, domain, password_hash, created),
        )
        return mailbox_get(db, address)


def mailbox_get(db, address):
    row = db.execute("SELECT * FROM mailboxes WHERE address = ?", (address,)).fetchone()
    if row is None:
        raise NotFound("no mailbox %s" % (address,))
    return _mailbox(row)


def mailbox_find(db, address):
    row = db.execute("SELECT * FROM mailboxes WHERE address = ?", (address,)).fetchone()
    return None if row is None else _mailbox(row)


def mailbox_list(db, domain=None):
    if domain is None:
        rows = db.execute("SELECT * FROM mailboxes ORDER BY address")
    else:
        rows = db.execute("SELECT * FROM mailboxes WHERE domain = ? ORDER BY address", (domain,))
    return [_mailbox(r) for r in rows]


def mailbox_set_password_hash(db, address, password_hash, only_if_current=None):
    """
    Store a new hash.  With C{only_if_current}, a rehash on login does not
    overwrite a password reset that raced with it.
    """
    with transaction(db):
        mailbox_get(db, address)
        if only_if_current is None:
            db.execute(
                "UPDATE mailboxes SET password_hash = ? WHERE address = ?", (password_hash, address)
            )
        else:
            db.execute(
                "UPDATE mailboxes SET password_hash = ? WHERE address = ? AND password_hash = ?",
                (password_hash, address, only_if_current),
            )


def mailbox_set_paused(db, address, paused):
    with transaction(db):
        mailbox_get(db, address)
        db.execute("UPDATE mailboxes SET paused = ? WHERE address = ?", (int(paused), address))
        return mailbox_get(db, address)


def mailbox_context(db, address):
    """The mailbox with its domain and account, or C{None}."""
    row = db.execute("SELECT * FROM mailboxes WHERE address = ?", (address,)).fetchone()
    if row is None:
        return None
    mailbox = _mailbox(row)
    domain = domain_get(db, mailbox.domain)
    return MailboxContext(mailbox, domain, account_get(db, domain.account_id))


def domain_context(db, name):
    """C{(domain, account)} for a hosted domain, or C{None}."""
    domain = domain_find(db, name)
    if domain is None:
        return None
    return domain, account_get(db, domain.account_id)


def _alias(row):
    return Alias(address=row["address"], domain=row["domain"], targets=tuple(json.loads(row["targets"])))


def alias_add(db, address, domain, targets, created):
    with transaction(db):
        domain_get(db, domain)
        if db.execute("SELECT 1 FROM aliases WHERE address = ?", (address,)).fetchone():
            raise Duplicate("alias %s already exists" % (address,))
        db.execute(
            "INSERT INTO aliases (address, domain, targets, created) VALUES (?, ?, ?, ?)",
            (address, domain, json.dumps(list(targets)), created),
        )
        return alias_find(db, address)


def alias_find(db, address):
    row = db.execute("SELECT * FROM aliases WHERE address = ?", (address,)).fetchone()
    return None if row is None else _alias(row)


def alias_list(db, domain=None):
    if domain is None:
        rows = db.execute("SELECT * FROM aliases ORDER BY address")
    else:
        rows = db.execute("SELECT * FROM aliases WHERE domain = ? ORDER BY address", (domain,))
    return [_alias(r) for r in rows]


def alias_remove(db, address):
    with transaction(db):
        alias = alias_find(db, address)
        if alias is None:
            raise NotFound("no alias %s" % (address,))
        db.execute("DELETE FROM aliases WHERE address = ?", (address,))
        return alias


def retarget(db, old, new):
    """Aliases and catch-alls that deliver to mailbox C{old} deliver to C{new} instead (a rename)."""
    pattern = "%%%s%%" % (json.dumps(old),)
    for alias in [_alias(r) for r in db.execute("SELECT * FROM aliases WHERE targets LIKE ?", (pattern,))]:
        if old in alias.targets:
            targets = tuple(dict.fromkeys(new if t == old else t for t in alias.targets))
            db.execute("UPDATE aliases SET targets = ? WHERE address = ?", (json.dumps(list(targets)), alias.address))
    db.execute("UPDATE domains SET catchall = ? WHERE catchall = ?", (new, old))


def alias_mailboxes(db, address):
    """
    The mailboxes alias C{address} delivers to that still exist, in its
    order, or C{None} when it is no alias (or none of its mailboxes is
    left): a deleted mailbox drops out of its aliases without a write.
    """
    alias = alias_find(db, address)
    if alias is None:
        return None
    found = tuple(t for t in alias.targets if mailbox_find(db, t) is not None)
    return found or None
