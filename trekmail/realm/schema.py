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
        """
        CREATE TABLE aliases (
            address TEXT PRIMARY KEY COLLATE NOCASE,
            domain TEXT NOT NULL REFERENCES domains(name),
            targets TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE INDEX aliases_by_domain ON aliases(domain);
        ALTER TABLE domains ADD COLUMN catchall TEXT
        """,
        """
        CREATE TABLE dkim_selectors (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            domain TEXT NOT NULL REFERENCES domains(name) COLLATE NOCASE,
            selector TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            public_key TEXT NOT NULL,
            state TEXT NOT NULL,
            created REAL NOT NULL,
            activated_at REAL,
            retiring_at REAL,
            retired_at REAL
        );
        CREATE UNIQUE INDEX dkim_selectors_published ON dkim_selectors(domain, selector) WHERE state != 'retired';
        CREATE INDEX dkim_selectors_by_state ON dkim_selectors(state);
        ALTER TABLE domains ADD COLUMN dkim_ed25519_selector TEXT
        """,
    ),
)
"""
Version 2: aliases (C{targets} a JSON list of mailbox addresses) and each
domain's catch-all mailbox (docs/addressing.md).  Version 3: DKIM
selectors under rotation (L{trekmail.realm.dkimselectors}) and the
domain's active Ed25519 selector; a domain without rows keeps signing
with its row's C{dkim_selector}, so existing domains need no rows.
"""

PROFILES = Schema(
    "profiles",
    (
        """
        CREATE TABLE smtp_profiles (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            tls TEXT NOT NULL,
            username TEXT NOT NULL,
            password_sealed TEXT NOT NULL,
            spf_include TEXT,
            created REAL NOT NULL,
            UNIQUE (account_id, name)
        );
        CREATE INDEX smtp_profiles_by_account ON smtp_profiles(account_id)
        """,
    ),
)

COUNTERS = Schema(
    "counters",
    (
        """
        CREATE TABLE send_daily (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            day INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (scope, key, day)
        );
        CREATE INDEX send_daily_by_day ON send_daily(day);
        CREATE TABLE send_recent (
            account_id INTEGER NOT NULL,
            second INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (account_id, second)
        )
        """,
    ),
)
"""Sending counters of L{trekmail.policy.counters}: per UTC day, and per second for the rolling hour."""

QUEUE = Schema(
    "queue",
    (
        """
        CREATE TABLE hard_bounces (
            domain TEXT NOT NULL COLLATE NOCASE,
            address TEXT NOT NULL COLLATE NOCASE,
            count INTEGER NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            last_diagnostic TEXT NOT NULL,
            suppressed_at REAL,
            PRIMARY KEY (domain, address)
        )
        """,
    ),
)
"""Hard bounces and suppressed addresses of L{trekmail.queue.suppression}."""

SCHEMAS = (REALM, PROFILES, COUNTERS, QUEUE)
