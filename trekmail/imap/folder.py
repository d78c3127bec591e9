"""
An open folder, once per process: UIDs, flags, MODSEQ and cached
structure, shared by every session that selects it and the authority
while open.  An expunged message stays readable (a "ghost") until every
view (L{trekmail.imap.view.View}) that still numbers it has sent its
EXPUNGE.  Flag changes are answered from memory and reach the index in
batches after the reply (L{trekmail.imap.store.Account.save_flags}); the
structures FETCH needs are kept in the index, packed by L{_pack}.
"""

import struct

from twisted.internet import defer
from twisted.logger import Logger

from trekmail.imap import index, message
from trekmail.imap.view import SYSTEM_FLAGS, View

POLL_INTERVAL = 5


class Msg:
    __slots__ = ("filename", "flags", "modseq", "size", "date")

    def __init__(self, filename, flags, modseq, size, date):
        self.filename = filename
        self.flags = flags
        self.modseq = modseq
        self.size = size
        self.date = date



def _flags(text):
    return frozenset(text.split()) if text else frozenset()


def _pack(structures):
    envelope, full, plain = structures
    return struct.pack("!II", len(envelope), len(full)) + envelope + full + plain


def _unpack(blob):
    a, b = struct.unpack("!II", blob[:8])
    return blob[8:8 + a], blob[8 + a:8 + a + b], blob[8 + a + b:]


def _cached_structures(db, name, uids):
    return {uid: _unpack(bytes(blob)) for uid, blob in index.load_structures(db, name, uids).items()}


def _compute_structures(root, name, wanted):
    """Reads and parses messages ({uid: filename}) off the index worker: {uid: structures}."""
    contents = index.read_messages(root, name, list(wanted.values()))
    return {uid: message.structures(contents[f]) for uid, f in wanted.items() if contents.get(f) is not None}


class Folder:
    log = Logger()

    def __init__(self, account, name, counters, rows, fresh):
        self.account = account
        self.name = name
        self.uidvalidity, self.uidnext, self.highestmodseq = counters
        self.uids = [r[0] for r in rows]
        self.msgs = {r[0]: Msg(r[1], _flags(r[2]), r[3], r[4], r[5]) for r in rows}
        self.structures = {}
        self.views = set()
        self.recent = set(fresh)
        self.ghosts = {}
        self.keywords = set()
        for msg in self.msgs.values():
            self.keywords |= msg.flags
        self.keywords -= set(SYSTEM_FLAGS)
        self.watched = False
        self.polled_at = account.store.seconds()

    def get(self, uid):
        msg = self.msgs.get(uid)
        if msg is None:
            ghost = self.ghosts.get(uid)
            return ghost[0] if ghost else None
        return msg

    def unseen(self):
        return sum(1 for m in self.msgs.values() if "\\Seen" not in m.flags)

    def first_unseen(self, view):
        for seq, uid in enumerate(view.uids, 1):
            msg = self.get(uid)
            if msg is not None and "\\Seen" not in msg.flags:
                return seq
        return None

    def open_view(self, listener, readonly):
        view = View(self, listener, readonly)
        if not readonly and self.recent:
            view.recent, self.recent = self.recent, set()
        elif self.recent:
            # EXAMINE reports \Recent without taking it from the next SELECT (RFC 3501 6.3.2).
            view.recent = frozenset(self.recent)
        self.views.add(view)
        return view

    def close_view(self, view):
        self.views.discard(view)
        self.release_ghosts(view, view.expunged)

    def _notify(self, origin):
        for view in list(self.views):
            if view is not origin:
                view.listener.mailbox_changed()

    def add(self, found, origin=None, structures=None):
        """
        Indexes new files ((filename, size, date, flags text) each, with
        their structures if known); returns their UIDs.
        """
        if not found:
            return defer.succeed([])
        self.highestmodseq += 1
        rows = []
        for position, (filename, size, date, flags) in enumerate(found):
            uid = self.uidnext
            self.uidnext += 1
            self.msgs[uid] = Msg(filename, _flags(flags), self.highestmodseq, size, date)
            self.keywords |= self.msgs[uid].flags - set(SYSTEM_FLAGS)
            blob = None
            if structures is not None:
                self.structures[uid] = structures[position]
                blob = _pack(structures[position])
            rows.append((uid, filename, flags, self.highestmodseq, size, date, blob))
        uids = [r[0] for r in rows]
        self.uids = self.uids + uids
        takers = [v for v in self.views if not v.readonly]
        if takers:
            takers[0].recent = takers[0].recent | set(uids)
        else:
            self.recent.update(uids)
        self._notify(origin)
        d = self.account.run_db(index.insert_rows, self.name, rows, self.uidnext, self.highestmodseq,
                                rows=len(rows))
        return d.addCallback(lambda _: uids)

    def poll(self, force=False):
        """
        Picks up what delivery left in C{new/}: on inotify at once, and on
        NOOP, IDLE, CHECK, SELECT and STATUS; a watched folder is listed
        again at most every L{POLL_INTERVAL} (a safety net for a lost
        inotify event), sparing the worker a directory listing per NOOP.
        """
        if not self.poll_due(force):
            return defer.succeed([])
        self.polled_at = self.account.store.seconds()
        d = self.account.run(index.take_new, self.account.db, self.account.root, self.name)
        return d.addCallback(self.add)

    def poll_due(self, force=False):
        """Whether L{poll} would list C{new/}: if not, a command can answer without waiting for it."""
        return force or not self.watched or self.account.store.seconds() - self.polled_at >= POLL_INTERVAL

    def store(self, view, uids, mode, flags, unchangedsince=None):
        """
        Applies a STORE; returns (changed uids, uids failing UNCHANGEDSINCE).
        The index hears of it through L{Account.save_flags}.
        """
        flags = frozenset(flags)
        changed, failed, rows = [], [], []
        modseq = self.highestmodseq + 1
        for uid in uids:
            msg = self.msgs.get(uid)
            if msg is None:
                continue
            if unchangedsince is not None and msg.modseq > unchangedsince:
                failed.append(uid)
                continue
            if mode == "+":
                new = msg.flags | flags
            elif mode == "-":
                new = msg.flags - flags
            else:
                new = flags
            if "\\Recent" in new:
                new = new - {"\\Recent"}
            if new == msg.flags:
                if unchangedsince is not None:
                    changed.append(uid)
                continue
            msg.flags = new
            msg.modseq = modseq
            changed.append(uid)
            rows.append((uid, " ".join(sorted(new)), modseq))
        if not rows:
            return changed, failed
        self.highestmodseq = modseq
        self.keywords |= flags - set(SYSTEM_FLAGS) - {"\\Recent"}
        touched = {uid for uid, _, _ in rows}
        for other in self.views:
            if other is not view:
                other.changed |= touched
        self._notify(view)
        self.account.save_flags(self.name, rows, modseq)
        return changed, failed

    def expunge(self, view, uids):
        """Removes messages (their files stay readable while any view still numbers them)."""
        records = []
        orphans = []
        untold = {}
        for uid in uids:
            msg = self.msgs.pop(uid, None)
            if msg is None:
                continue
            records.append((uid, msg.filename))
            holders = {v for v in self.views if v is not view and v.seq_of(uid) is not None}
            for holder in holders:
                untold.setdefault(holder, set()).add(uid)
            if holders:
                self.ghosts[uid] = [msg, holders]
            else:
                orphans.append((msg.filename, msg.size))
        for holder, more in untold.items():
            holder.expunged = holder.expunged | more
        if not records:
            return defer.succeed(None)
        gone = {uid for uid, _ in records}
        self.uids = [u for u in self.uids if u not in gone]
        if view is not None:
            view.rejoin()
        self.recent -= gone
        self.highestmodseq += 1
        self._notify(view)
        self.account.store.cache.drop([(self.account.root, m) for m, _ in orphans])
        return self.account.spares.offer(orphans, lambda keep: self.account.run_db(
            index.delete_rows, self.account.root, self.name, records, self.highestmodseq,
            {m for m, _ in orphans}, keep, rows=len(records)))

    def release_ghosts(self, view, uids):
        done = []
        for uid in uids:
            ghost = self.ghosts.get(uid)
            if ghost is None:
                continue
            ghost[1].discard(view)
            if not ghost[1]:
                done.append(self.ghosts.pop(uid)[0])
        if done:
            filenames = [m.filename for m in done]
            self.account.store.cache.drop([(self.account.root, f) for f in filenames])
            # The worker is ordered: once it reaches here, the expunge that parked these files in tmp/ is done.
            self.account.spares.offer([(m.filename, m.size) for m in done], lambda keep: self.account.run(
                index.discard, self.account.root, self.name, filenames, keep, rows=len(done))).addErrback(
                lambda f: self.log.failure("expunged files not removed", f))

    def read(self, uids, keep=True):
        """
        Deferred firing with {uid: raw bytes or None}; only what the cache
        lacks is read from disk, and kept there if C{keep} (not for a scan
        through a whole folder, which would push out what sessions use).
        """
        cache, root = self.account.store.cache, self.account.root
        found, missing = self._in_cache(uids)
        if not missing:
            return defer.succeed(found)

        def loaded(contents):
            for uid, filename in missing.items():
                data = found[uid] = contents.get(filename)
                if keep:
                    cache.put((root, filename), data)
            return found
        d = self.account.run_files(index.read_messages, root, self.name, list(missing.values()))
        return d.addCallback(loaded)

    def cached(self, uids):
        """{uid: raw bytes} if every one of C{uids} still here is in the message cache, else C{None}."""
        found, missing = self._in_cache(uids)
        return None if missing else found

    def _in_cache(self, uids):
        """({uid: raw bytes} for those cached, {uid: file name} for the rest), skipping uids gone."""
        cache, root = self.account.store.cache, self.account.root
        found, missing = {}, {}
        for uid in uids:
            msg = self.get(uid)
            if msg is None:
                continue
            data = cache.get((root, msg.filename))
            if data is None:
                missing[uid] = msg.filename
            else:
                found[uid] = data
        return found, missing

    def known_structures(self, uids):
        """The structures (as L{structure} gives them) if every one of C{uids} still here has them, else C{None}."""
        structures = self.structures
        for uid in uids:
            if uid not in structures and self.get(uid) is not None:
                return None
        return structures

    def structure(self, uids):
        """Deferred firing with {uid: (ENVELOPE, BODYSTRUCTURE, BODY)} as wire bytes."""
        wanted = {uid: self.get(uid).filename for uid in uids
                  if uid not in self.structures and self.get(uid) is not None}
        if not wanted:
            return defer.succeed(self.structures)

        def cached(found):
            self.structures.update(found)
            missing = {uid: f for uid, f in wanted.items() if uid not in found}
            if not missing:
                return self.structures
            return self.account.run_files(_compute_structures, self.account.root, self.name, missing).addCallback(
                computed)

        def computed(fresh):
            self.structures.update(fresh)
            if fresh:
                self.account.run_db(index.save_structures, self.name, {u: _pack(v) for u, v in fresh.items()},
                                    rows=len(fresh))
            return self.structures
        return self.account.run_db(_cached_structures, self.name, list(wanted), rows=len(wanted)).addCallback(cached)
