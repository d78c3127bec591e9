"""
DKIM key rotation: each domain's selectors and the states they go
through (docs/dkim.md).

A new key is made under a new selector and stays I{pending}, published
but unused, until DNS shows it: signing with a key receivers cannot find
yet would fail every message (RFC 6376 section 6.1.2).  Once DNS shows
it, it becomes I{active} and the key it replaces I{retiring}: still
published for C{[dkim] overlap_days}, so that messages signed with it
and still in queues or being re-verified (forwarders, ARC) verify, and
then I{retired}: its private key file is removed and its record leaves
C{domain dns}.  RFC 6376 section 3.1 has selectors exist for exactly
this.  There is at most one active selector per algorithm; the active
RSA one is also kept in the domain's own row (C{dkim_selector},
C{dkim_public_key}), which is what signing and older code read, so a
domain that never rotated has its selector C{dkim} active with no row
here at all.

L{advance} is the state machine, a pure function of the selectors, of
which pending ones DNS shows, and of the time; L{step} writes what it
decides.  The DNS lookups are the caller's (L{trekmail.relay.dkimrotation}).
"""

import dataclasses
import datetime
import os
from dataclasses import dataclass
from typing import Optional

from trekmail.realm import dkimkeys, store
from trekmail.realm.database import from_row, transaction
from trekmail.realm.errors import InvalidInput

PENDING = "pending"
ACTIVE = "active"
RETIRING = "retiring"
RETIRED = "retired"

MAX_SAME_DAY = 20
"""Rotations of one domain on one UTC day before a new selector name is refused."""


@dataclass(frozen=True)
class DkimSettings:
    overlap: float = 7 * 86400
    """C{[dkim] overlap_days}, in seconds: how long a replaced selector stays published."""
    cname_zone: str = ""
    """C{[dkim] cname_zone}: the operator's zone that customers' selectors are CNAMEs into, or empty."""
    ed25519: bool = False
    """C{[dkim] ed25519}: rotations also make an Ed25519 key, and mail is signed with both (RFC 8463)."""


@dataclass(frozen=True)
class Selector:
    domain: str
    selector: str
    algorithm: str
    public_key: str
    state: str
    created: float
    activated_at: Optional[float] = None
    retiring_at: Optional[float] = None
    retired_at: Optional[float] = None

    def retire_at(self, overlap):
        return None if self.retiring_at is None else self.retiring_at + overlap


def slots(algorithm=dkimkeys.RSA):
    """
    In CNAME mode, the two selector names a domain alternates between, so
    the customer's CNAMEs, published once, cover every rotation.
    """
    suffix = "e" if algorithm == dkimkeys.ED25519 else ""
    return ("tm1" + suffix, "tm2" + suffix)


def first_selector(settings):
    """The selector of a new domain's first key."""
    return slots()[0] if settings.cname_zone else dkimkeys.DEFAULT_SELECTOR


def live(db, domain):
    """The published selectors of C{domain} (a L{Domain}), oldest first, its row's own one included."""
    rows = [from_row(Selector, r) for r in db.execute(
        "SELECT * FROM dkim_selectors WHERE domain = ? AND state != ? ORDER BY created, id", (domain.name, RETIRED))]
    if not any(r.selector == domain.dkim_selector for r in rows):
        rows.insert(0, Selector(domain.name, domain.dkim_selector, dkimkeys.RSA, domain.dkim_public_key, ACTIVE,
                                domain.created, activated_at=domain.created))
    return rows


def history(db, domain):
    """Every selector of C{domain}, retired ones too, oldest first."""
    retired = [from_row(Selector, r) for r in db.execute(
        "SELECT * FROM dkim_selectors WHERE domain = ? AND state = ? ORDER BY created, id", (domain.name, RETIRED))]
    return sorted(retired + live(db, domain), key=lambda s: s.created)


def _new_name(db, domain, algorithm, now, settings, current):
    taken = {r[0] for r in db.execute("SELECT selector FROM dkim_selectors WHERE domain = ?", (domain.name,))}
    taken.update(s.selector for s in current)
    if settings.cname_zone:
        for name in slots(algorithm):
            if not any(s.selector == name and s.state in (ACTIVE, RETIRING) for s in current):
                return name
        retiring = [s for s in current if s.state == RETIRING and s.algorithm == algorithm]
        raise InvalidInput(
            "both CNAME selectors of %s are in use: %s is still published until %s; rotate again after that"
            % (domain.name, retiring[0].selector, _date(retiring[0].retire_at(settings.overlap))))
    day = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y%m%d")
    base = "tm%s%s" % (day, "e" if algorithm == dkimkeys.ED25519 else "")
    for count in range(1, MAX_SAME_DAY + 1):
        name = base if count == 1 else "%s-%d" % (base, count)
        if name not in taken:
            return name
    raise InvalidInput("%s was rotated %d times today already: try again tomorrow" % (domain.name, MAX_SAME_DAY))


def _date(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def rotate(db, data_dir, name, now, settings):
    """
    New pending keys for domain C{name}: RSA, and Ed25519 with
    C{[dkim] ed25519}.  A pending key of the same algorithm that DNS never
    showed is replaced (it signed nothing); its file is removed.
    """
    algorithms = (dkimkeys.RSA, dkimkeys.ED25519) if settings.ed25519 else (dkimkeys.RSA,)
    with transaction(db):
        domain = store.domain_get(db, name)
        dropped = [s for s in live(db, domain) if s.state == PENDING and s.algorithm in algorithms]
        current = [s for s in live(db, domain) if s not in dropped]
        names = [(a, _new_name(db, domain, a, now, settings, current)) for a in algorithms]
        for old in dropped:
            _store(db, dataclasses.replace(old, state=RETIRED, retired_at=now))
        made = [Selector(domain.name, selector, algorithm, dkimkeys.generate(data_dir, domain.name, selector, algorithm),
                         PENDING, now) for algorithm, selector in names]
        for selector in made:
            _store(db, selector)
    remove_key_files(data_dir, dropped)
    return made


_COLUMNS = [f.name for f in dataclasses.fields(Selector)]


def _store(db, selector):
    """
    Update the selector's published row, or insert it: the domain row's
    own selector (L{live}) gets a row of its own the first time it changes
    state.
    """
    updated = db.execute(
        "UPDATE dkim_selectors SET %s WHERE domain = ? AND selector = ? AND state != ?"
        % (", ".join("%s = ?" % c for c in _COLUMNS),),
        [getattr(selector, c) for c in _COLUMNS] + [selector.domain, selector.selector, RETIRED]).rowcount
    if not updated:
        db.execute("INSERT INTO dkim_selectors (%s) VALUES (%s)" % (", ".join(_COLUMNS), ", ".join("?" * len(_COLUMNS))),
                   [getattr(selector, c) for c in _COLUMNS])


def advance(selectors, shown, now, overlap):
    """
    The selectors that change state, with their new values.  C{shown}:
    the names of pending selectors whose key DNS shows as ours.  Per
    algorithm, the newest shown pending key becomes active and the
    active one retiring; a retiring key whose overlap is over is retired.
    """
    changed = []
    for algorithm in {s.algorithm for s in selectors}:
        mine = [s for s in selectors if s.algorithm == algorithm]
        ready = [s for s in mine if s.state == PENDING and s.selector in shown]
        if ready:
            newest = max(ready, key=lambda s: s.created)
            changed.append(dataclasses.replace(newest, state=ACTIVE, activated_at=now))
            changed.extend(dataclasses.replace(s, state=RETIRING, retiring_at=now)
                           for s in mine if s.state == ACTIVE or (s in ready and s is not newest))
        changed.extend(dataclasses.replace(s, state=RETIRED, retired_at=now)
                       for s in mine if s.state == RETIRING and s.retire_at(overlap) <= now)
    return changed


def step(db, data_dir, name, shown, now, overlap):
    """
    L{advance} domain C{name} and write what changes, deciding on the rows
    as they are inside the transaction: a rotation made since C{shown}
    was looked up replaced the pending key DNS showed, which then stays
    unused.  Retired keys' files are removed after the commit.
    """
    with transaction(db):
        domain = store.domain_get(db, name)
        changed = advance(live(db, domain), shown, now, overlap)
        for selector in changed:
            _store(db, selector)
            if selector.state == ACTIVE and selector.algorithm == dkimkeys.RSA:
                db.execute("UPDATE domains SET dkim_selector = ?, dkim_public_key = ? WHERE name = ?",
                           (selector.selector, selector.public_key, name))
            if selector.state == ACTIVE and selector.algorithm == dkimkeys.ED25519:
                db.execute("UPDATE domains SET dkim_ed25519_selector = ? WHERE name = ?", (selector.selector, name))
    remove_key_files(data_dir, [s for s in changed if s.state == RETIRED])
    return changed


def pending(db, name, settings):
    """
    C{(name looked up, name to publish at, TXT value)} of the pending
    selectors of domain C{name}, for C{domain verify}.
    """
    domain = store.domain_get(db, name)
    return tuple((record_name(domain.name, s.selector),
                  operator_name(domain.name, s.selector, settings) if s.selector in _slot_names(settings)
                  else record_name(domain.name, s.selector),
                  dkimkeys.txt_value(s.public_key, s.algorithm))
                 for s in live(db, domain) if s.state == PENDING)


def record_name(domain_name, selector):
    """RFC 6376 section 3.6.2.1."""
    return "%s._domainkey.%s" % (selector, domain_name)


def remove_key_files(data_dir, selectors):
    """After the commit that retired or deleted C{selectors}."""
    for selector in selectors:
        try:
            os.unlink(dkimkeys.key_path(data_dir, selector.domain, selector.selector))
        except FileNotFoundError:
            pass


def due(db, now, overlap):
    """The names of the domains with a pending key or a retiring one whose overlap is over."""
    return [r[0] for r in db.execute(
        "SELECT DISTINCT domain FROM dkim_selectors WHERE state = ? OR (state = ? AND retiring_at + ? <= ?)"
        " ORDER BY domain", (PENDING, RETIRING, overlap, now))]


def live_named(db, name):
    """L{live} of the domain named C{name}."""
    return live(db, store.domain_get(db, name))


def delete_rows(db, name):
    """The rows of a domain being deleted, inside its transaction: the key files to remove after the commit."""
    domain = store.domain_get(db, name)
    files = live(db, domain)
    db.execute("DELETE FROM dkim_selectors WHERE domain = ?", (name,))
    return files


def status(db, name, settings):
    """C{domain dkim status}: every selector of the domain, with its dates and its record's name."""
    domain = store.domain_get(db, name)
    return [dict(
        selector=s.selector, algorithm=s.algorithm, state=s.state, created=s.created,
        activated_at=s.activated_at, retiring_at=s.retiring_at,
        retire_at=s.retire_at(settings.overlap) if s.state == RETIRING else None, retired_at=s.retired_at,
        record=record_name(domain.name, s.selector),
    ) for s in history(db, domain)]


def records(db, domain, settings):
    """
    The DKIM lines of C{domain dns} (name, type, value).  Without a CNAME
    zone, a TXT record per published selector.  With one, the customer
    publishes a CNAME per slot (L{slots}) once, and the operator the TXT
    record of each published slot selector under C{cname_zone}; a selector
    from before CNAME mode (C{dkim}) stays a TXT record of the customer's.
    """
    published = live(db, domain)
    names = _slot_names(settings)
    lines = [(record_name(domain.name, s.selector), "TXT", dkimkeys.txt_value(s.public_key, s.algorithm))
             for s in published if s.selector not in names]
    lines.extend((record_name(domain.name, n), "CNAME", "%s." % (operator_name(domain.name, n, settings),))
                 for n in names)
    lines.extend((operator_name(domain.name, s.selector, settings), "TXT",
                  dkimkeys.txt_value(s.public_key, s.algorithm)) for s in published if s.selector in names)
    return lines


def _slot_names(settings):
    """The selectors that are CNAMEs into the operator's zone: none without C{[dkim] cname_zone}."""
    if not settings.cname_zone:
        return ()
    return slots() + (slots(dkimkeys.ED25519) if settings.ed25519 else ())


def operator_name(domain_name, selector, settings):
    """Where the operator publishes a CNAME-mode selector's key."""
    return "%s.%s.%s" % (selector, domain_name, settings.cname_zone.rstrip("."))
