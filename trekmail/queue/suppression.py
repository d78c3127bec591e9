"""
Bounce processing (docs/sending-rules.md, "Bounces and suppression"): hard bounces are counted per sending domain
and recipient; once an address has hard-bounced C{threshold} times, mail
from that domain to it fails at once instead of hurting the domain's
reputation with "delivering to dead addresses" signals.

The table functions take the sqlite connection first, so the CLI calls
them directly and the server runs them on the database thread; the table is
L{trekmail.realm.schema.QUEUE}.  The
server keeps the suppressed set in memory (checked for every message) and
reloads it periodically so C{trekmail suppression remove} applies within
L{REFRESH_SECONDS} without a restart.
"""

from dataclasses import dataclass
from typing import Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from trekmail.realm.database import from_row, transaction

REFRESH_SECONDS = 30

log = Logger()

HARD_BOUNCE_SUBJECTS = ("0", "1", "2")
"""
RFC 3463 subjects that say something about the recipient: unspecified,
addressing (5.1.x: no such user or domain) and mailbox (5.2.x).  Policy,
routing and protocol refusals (5.7.x, 5.4.x, 5.5.x...) say nothing about
the address: a provider profile with a wrong password must not get every
recipient suppressed.
"""


def is_hard_bounce(outcome):
    """Whether a failed L{trekmail.delivery.Outcome} counts against its address."""
    return outcome.permanent and is_hard_status(outcome.status)


def is_hard_status(status):
    """Whether an enhanced status code (RFC 3463), such as a returned report's, counts against its address."""
    parts = status.split(".")
    return len(parts) == 3 and parts[0] == "5" and parts[1] in HARD_BOUNCE_SUBJECTS


@dataclass(frozen=True)
class BounceRecord:
    domain: str
    address: str
    count: int
    last_at: float
    last_diagnostic: str
    suppressed_at: Optional[float]


def record_hard_bounce(db, domain, address, now, diagnostic, threshold):
    """Count one hard bounce; returns the updated L{BounceRecord}."""
    with transaction(db):
        db.execute(
            "INSERT INTO hard_bounces (domain, address, count, first_at, last_at, last_diagnostic)"
            " VALUES (?, ?, 1, ?, ?, ?)"
            " ON CONFLICT (domain, address) DO UPDATE SET"
            " count = count + 1, last_at = excluded.last_at,"
            " last_diagnostic = excluded.last_diagnostic",
            (domain, address, now, now, diagnostic),
        )
        db.execute(
            "UPDATE hard_bounces SET suppressed_at = ?"
            " WHERE domain = ? AND address = ? AND count >= ? AND suppressed_at IS NULL",
            (now, domain, address, threshold),
        )
        row = db.execute(
            "SELECT * FROM hard_bounces WHERE domain = ? AND address = ?", (domain, address)
        ).fetchone()
    return from_row(BounceRecord, row)


def suppressed(db, domain=None):
    if domain is None:
        rows = db.execute(
            "SELECT * FROM hard_bounces WHERE suppressed_at IS NOT NULL ORDER BY domain, address"
        )
    else:
        rows = db.execute(
            "SELECT * FROM hard_bounces WHERE suppressed_at IS NOT NULL AND domain = ?"
            " ORDER BY address",
            (domain,),
        )
    return [from_row(BounceRecord, r) for r in rows]


def remove(db, address, domain=None):
    """Forget an address's bounces (for one sending domain or all); returns rows removed."""
    with transaction(db):
        if domain is None:
            cursor = db.execute("DELETE FROM hard_bounces WHERE address = ?", (address,))
        else:
            cursor = db.execute(
                "DELETE FROM hard_bounces WHERE address = ? AND domain = ?", (address, domain)
            )
        return cursor.rowcount


class Suppressions:
    """The server's view: an in-memory set, written through to the table."""

    def __init__(self, database, clock, threshold):
        self._database = database
        self._clock = clock
        self.threshold = threshold
        self._set = set()
        self._refresh = LoopingCall(self.reload)
        self._refresh.clock = clock

    def start(self):
        return self._refresh.start(REFRESH_SECONDS, now=True)

    def stop(self):
        if self._refresh.running:
            self._refresh.stop()

    def reload(self):
        def loaded(records):
            self._set = {(r.domain.lower(), r.address.lower()) for r in records}

        def failed(reason):
            log.failure("cannot load the suppression list", reason)

        return self._database.run(suppressed).addCallbacks(loaded, failed)

    def is_suppressed(self, domain, address):
        return (domain.lower(), address.lower()) in self._set

    def record(self, domain, address, diagnostic):
        """Deferred firing with the L{BounceRecord}."""

        def recorded(record):
            if record.suppressed_at is not None:
                if (domain.lower(), address.lower()) not in self._set:
                    log.info(
                        "suppressed {address} for {domain} after {count} hard bounces",
                        address=address, domain=domain, count=record.count,
                    )
                self._set.add((domain.lower(), address.lower()))
            return record

        return self._database.run(
            record_hard_bounce, domain, address, self._clock.seconds(), diagnostic, self.threshold
        ).addCallback(recorded)
