"""
A mailbox's subscriptions (RFC 3501 6.3.6, 6.3.7, 6.3.9): a list of
names beside the folders, not a property of them.  CREATE does not
subscribe and DELETE does not unsubscribe, so a name stays subscribed
while no folder has it (a client may subscribe before it creates, or
keep a subscription across a delete and a re-create); the server never
drops one on its own (6.3.6).  Like the index, these functions block and
run where the store runs index work.
"""

from trekmail.realm.database import Schema

SUBSCRIPTIONS = Schema(
    "imap-subscriptions",
    (
        """
        CREATE TABLE subscriptions (name TEXT PRIMARY KEY) WITHOUT ROWID;
        INSERT INTO subscriptions SELECT name FROM folders WHERE subscribed;
        ALTER TABLE folders DROP COLUMN subscribed
        """,
    ),
)
"""
Upgraded after the index's own schema, whose first version kept a
C{subscribed} column on each folder: what it said moves into the list.
"""


def names(db):
    return [r[0] for r in db.execute("SELECT name FROM subscriptions ORDER BY name")]


def subscribe(db, name, on):
    if on:
        db.execute("INSERT OR IGNORE INTO subscriptions VALUES (?)", (name,))
    else:
        db.execute("DELETE FROM subscriptions WHERE name = ?", (name,))


def rename(db, old, new):
    """
    A renamed folder's subscription, and its children's, follow it to the
    new names; INBOX's own stays, as renaming INBOX leaves an INBOX (RFC 3501 6.3.5).
    """
    children = old + "."
    db.execute("UPDATE OR REPLACE subscriptions SET name = ? || substr(name, ?)"
               " WHERE (name = ? AND name != 'INBOX') OR substr(name, 1, ?) = ?",
               (new, len(old) + 1, old, len(children), children))


def lsub(subscribed, matches):
    """
    C{(name, no_select)} for LSUB: the subscribed names C{matches}
    accepts, and, as 6.3.9 asks, an unsubscribed parent of a subscribed
    name as C{\\Noselect} when the pattern matches the parent but not the
    child (C{%} stopped at the parent's level).
    """
    chosen = {name: False for name in subscribed if matches(name)}
    for name in subscribed:
        if name in chosen:
            continue
        parts = name.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:depth])
            if parent in chosen:
                break
            if matches(parent):
                chosen[parent] = True
                break
    return sorted(chosen.items())
