"""
The local rows that stand beside a directory's accounts and domains.

With C{[realm] backend = ldap} the directory owns who exists and what
they may do (plan, payment, verification, suspension, pause), while the
local store keeps what only this server knows: a domain's DKIM key and
selector, when we first served it (warmup counts from there), its DNS
status and route, and an account's default route.  Those tables refer to
C{accounts(id)}, as do SMTP profiles and counters, so each directory
account seen gets a local row under its directory account number, kept
equal to the directory's facts for tools that read the store (C{account
list}); the directory stays the authority, these copies are never read
back in its place.

Each function takes the sqlite connection first and runs on the database
thread, like L{trekmail.realm.store}.
"""

from trekmail.realm import store
from trekmail.realm.database import transaction

_FACTS = ("owner_email", "owner_verified", "registered", "plan", "paid", "suspension")


def _facts(account):
    return (
        account.owner_email,
        int(account.owner_verified),
        account.registered.isoformat(),
        account.plan,
        int(account.paid),
        account.suspension,
    )


def _write_account(db, account):
    db.execute(
        "INSERT INTO accounts (id, %s) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET %s"
        % (", ".join(_FACTS), ", ".join("%s = excluded.%s" % (c, c) for c in _FACTS)),
        (account.id,) + _facts(account),
    )


def _current(db, name, account):
    """Whether the local rows already say what the directory says."""
    row = db.execute(
        "SELECT %s FROM accounts WHERE id = ?" % (", ".join(_FACTS),), (account.id,)
    ).fetchone()
    owner = db.execute("SELECT account_id FROM domains WHERE name = ?", (name,)).fetchone()
    return row is not None and owner is not None and tuple(row) == _facts(account) and owner[0] == account.id


def local_domain(db, name, account):
    """
    C{(Domain, Account)} for directory domain C{name} owned by C{account}
    (the directory's L{trekmail.realm.model.Account}), after bringing the
    local rows up to date with it; C{None} if the domain has no local row
    yet.  Writes only when something changed, so a lookup is two reads.
    """
    if store.domain_find(db, name) is None:
        return None
    if not _current(db, name, account):
        with transaction(db):
            _write_account(db, account)
            db.execute("UPDATE domains SET account_id = ? WHERE name = ?", (account.id, name))
    return store.domain_get(db, name), store.account_get(db, account.id)


def add_domain(db, name, account, created, dkim_selector, dkim_public_key):
    """
    The local row of a directory domain seen for the first time, routed
    like the rest of its account; then as L{local_domain}.
    """
    with transaction(db):
        _write_account(db, account)
        if store.domain_find(db, name) is None:
            db.execute(
                "INSERT INTO domains (name, account_id, created, dkim_selector, dkim_public_key, route)"
                " SELECT ?, id, ?, ?, ?, default_route FROM accounts WHERE id = ?",
                (name, created, dkim_selector, dkim_public_key, account.id),
            )
    return local_domain(db, name, account)
