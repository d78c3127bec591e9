"""
The realm's tables.  Each component's migrations only ever grow: a
released migration is never edited, a change is a new entry.
"""

from trekmail.realm.database import Schema

REALM = Schema(
    "realm",
    (
        """
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            owner_email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            owner_verified INTEGER NOT NULL DEFAULT 0,
            registered TEXT NOT NULL,
            plan TEXT NOT NULL,
            paid INTEGER NOT NULL DEFAULT 1,
            suspension TEXT,
            default_route TEXT
        );
        CREATE TABLE domains (
            name TEXT PRIMARY KEY COLLATE NOCASE,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            created REAL NOT NULL,
            dkim_selector TEXT NOT NULL,
            dkim_public_key TEXT NOT NULL,
            dns_status TEXT NOT NULL DEFAULT 'pending',
            route TEXT
        );
        CREATE INDEX domains_by_account ON domains(account_id);
        CREATE TABLE mailboxes (
            address TEXT PRIMARY KEY COLLATE NOCASE,
            domain TEXT NOT NULL REFERENCES domains(name),
            password_hash TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        );
        CREATE INDEX mailboxes_by_domain ON mailboxes(domain)
        """,
    ),
)

SCHEMAS = (REALM,)
