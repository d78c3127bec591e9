"""
The sending counters behind the caps of L{trekmail.policy.limits}, kept in
sqlite so that they survive a restart (DESIGN.md, "Durability").

Every function takes the connection first and runs whole on the database
thread (L{ThreadedDatabase.run}); that thread is the only writer, and
L{check_and_record} reads, decides and writes in one IMMEDIATE
transaction, so concurrent sessions can never both take the last slot.

Tables (component "counters" in L{trekmail.realm.schema}):
  - C{send_daily(scope, key, day, count)}: messages per mailbox ("mailbox",
    address) and per account ("account", id) per UTC day;
  - C{send_recent(account_id, second, count)}: messages per account per
    second, the rolling hour summed over the last 3600 of them.
Rows older than the windows are pruned as each account records.
"""

from dataclasses import dataclass

from trekmail.policy.limits import HOUR, Counts, day_number, over_limit
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


def check_and_record(db, mailbox, account_id, caps, now):
    """
    Count one message from C{mailbox} if the caps leave room.

    @return: C{(denial, receipt)}: a L{Denial} and C{None} when a cap is
        full, else C{None} and the L{Receipt} of the message just counted.
    """
    mailbox = mailbox.lower()
    with transaction(db):
        denial = over_limit(caps, counts(db, mailbox, account_id, now))
        if denial is not None:
            return denial, None
        receipt = Receipt(mailbox, account_id, day_number(now), int(now))
        _add(db, receipt, 1)
        db.execute(
            "DELETE FROM send_recent WHERE account_id = ? AND second <= ?",
            (account_id, receipt.second - HOUR),
        )
        db.execute("DELETE FROM send_daily WHERE day < ?", (receipt.day - 1,))
        return None, receipt


def release(db, receipt):
    """Take back a message counted by L{check_and_record} that was not accepted after all."""
    with transaction(db):
        _add(db, receipt, -1)
