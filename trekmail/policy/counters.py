"""
The sending counters behind the caps of L{trekmail.policy.limits}, kept in
sqlite so that they survive a restart (docs/design.md, "On-disk formats").

Every function takes the connection first and runs whole on the database
thread (L{ThreadedDatabase.run}).  The decisions are not taken here: the
server holds the counts of the accounts sending now in
L{trekmail.policy.tally}, loads them with L{load} and writes every change
back with L{record}.

Tables (component "counters" in L{trekmail.realm.schema}):
  - C{send_daily(scope, key, day, count)}: messages per mailbox ("mailbox",
    address) and per account ("account", id) per UTC day;
  - C{send_recent(account_id, second, count)}: messages per account per
    second, the rolling hour summed over the last 3600 of them.
Rows older than the windows are pruned as each account records.
"""

from dataclasses import dataclass

from trekmail.policy.limits import HOUR, Counts, day_number
from trekmail.realm.database import transaction


@dataclass(frozen=True)
class Receipt:
    """Where one message was counted, so that L{release} can take it back."""

    mailbox: str
    account_id: int
    day: int
    second: int


def _daily(db, scope, key, day):
    row = db.execute(
        "SELECT count FROM send_daily WHERE scope = ? AND key = ? AND day = ?", (scope, key, day)
    ).fetchone()
    return row[0] if row else 0


def counts(db, mailbox, account_id, now):
    day = day_number(now)
    second = int(now)
    recent = db.execute(
        "SELECT COALESCE(SUM(count), 0) FROM send_recent WHERE account_id = ? AND second > ?",
        (account_id, second - HOUR),
    ).fetchone()[0]
    return Counts(
        mailbox_day=_daily(db, "mailbox", mailbox.lower(), day),
        account_day=_daily(db, "account", str(account_id), day),
        account_hour=recent,
    )


def _add(db, receipt, delta):
    for scope, key in (("mailbox", receipt.mailbox), ("account", str(receipt.account_id))):
        db.execute(
            "INSERT INTO send_daily (scope, key, day, count) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (scope, key, day) DO UPDATE SET count = MAX(0, count + excluded.count)",
            (scope, key, receipt.day, delta),
        )
    db.execute(
        "INSERT INTO send_recent (account_id, second, count) VALUES (?, ?, ?)"
        " ON CONFLICT (account_id, second) DO UPDATE SET count = MAX(0, count + excluded.count)",
        (receipt.account_id, receipt.second, delta),
    )


def load(db, mailbox, account_id, now):
    """C{(mailbox's count today, account's count today, [(second, count)] of the account's last hour})."""
    recent = db.execute(
        "SELECT second, count FROM send_recent WHERE account_id = ? AND second > ? ORDER BY second",
        (account_id, int(now) - HOUR),
    ).fetchall()
    day = day_number(now)
    return (
        _daily(db, "mailbox", mailbox.lower(), day),
        _daily(db, "account", str(account_id), day),
        [(row[0], row[1]) for row in recent],
    )


def record(db, receipt, delta):
    """
    Write one message counted (C{delta} 1) or taken back (-1) by
    L{trekmail.policy.tally.Tally}; counting prunes what has left the
    windows.
    """
    with transaction(db):
        _add(db, receipt, delta)
        if delta > 0:
            db.execute(
                "DELETE FROM send_recent WHERE account_id = ? AND second <= ?",
                (receipt.account_id, receipt.second - HOUR),
            )
            db.execute("DELETE FROM send_daily WHERE day < ?", (receipt.day - 1,))
