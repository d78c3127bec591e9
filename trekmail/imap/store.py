"""
Mailboxes as the IMAP sessions share them.

Twisted's C{IMailbox} shares one message numbering among all sessions and
has no way to tell a session about another's EXPUNGE, so it cannot give
each session the view RFC 3501 requires (5.2, 7.4.1).  Here a L{Folder}
holds the state of an open folder once per process (UIDs, flags, MODSEQ,
cached structure) and is the authority while open; each selected session
has a L{View}: its own sequence numbers, plus the expunges, new mail and
flag changes it has not been told about yet.  An expunged message stays
readable (a "ghost") until every view that still numbers it has sent its
EXPUNGE.

Index work and file moves run in submission order, so the reactor-side
state and the index never disagree about UIDs: small pieces at once on
the reactor thread, the rest on one worker thread (L{Account.run});
writing new files and reading messages run on a few more threads.  Each
trip to a thread costs the reactor more than most commands' own work
(py-spy under imaptest; C{bench/handoff.py}), so what can be answered
from memory is: flag changes reach the index in batches after the reply,
and recently used messages stay in a bounded L{MessageCache}.
"""

import bisect
import struct
from collections import OrderedDict

from twisted.internet import defer, inotify
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from trekmail.durable import remove_if_there
from trekmail.imap import fetch, index, message, spares
from trekmail.mailstore import maildir_path
from trekmail.workerthreads import WorkerThreads

POLL_INTERVAL = 5
INLINE_ROWS = 200
"""Index calls touching at most this many rows or files may run on the reactor thread (L{Account.run})."""
CHECKPOINT_EVERY = 500
"""Index calls on the reactor thread between two WAL checkpoints, which run on the worker."""
FLAGS_DELAY = 0.02
"""Seconds a flag change may wait in memory for others to share its index write."""
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class Msg:
    __slots__ = ("filename", "flags", "modseq", "size", "date")

    def __init__(self, filename, flags, modseq, size, date):
        self.filename = filename
        self.flags = flags
        self.modseq = modseq
        self.size = size
        self.date = date


class MessageCache:
    """
    Raw messages recently read or appended, least recently used dropped
    first, at most C{limit} bytes.  A Maildir file never changes once
    written and its name is unique, so an entry never goes stale; FETCH
    and SEARCH of a message in here need no trip to a file thread.
    Entries are L{message.Kept}: each may also hold one header answer,
    at most its own size again.
    """

    def __init__(self, limit):
        self.limit = limit
        self.size = 0
        self.entries = OrderedDict()

    def get(self, key):
        data = self.entries.get(key)
        if data is not None:
            self.entries.move_to_end(key)
        return data

    def put(self, key, data):
        if data is None or len(data) > self.limit // 16 or key in self.entries:
            return
        self.entries[key] = message.Kept(data)
        self.size += len(data)
        while self.size > self.limit:
            self.size -= len(self.entries.popitem(last=False)[1])

    def drop(self, keys):
        for key in keys:
            data = self.entries.pop(key, None)
            if data is not None:
                self.size -= len(data)


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


NOTHING = frozenset()
RECENT = frozenset({"\\Recent"})


class View:
    """
    One session's numbering of a selected folder and what it has yet to
    hear.  An idle session costs little: C{uids} is the folder's own list
    (never changed in place, by anyone) until this session's numbering
    differs from it, and the sets of what it has yet to hear are the
    shared empty L{NOTHING} until there is something in them.
    """

    __slots__ = ("folder", "listener", "readonly", "uids", "last_uid", "expunged", "changed", "recent",
                 "condstore", "keywords")

    def __init__(self, folder, listener, readonly):
        self.folder = folder
        self.listener = listener
        self.readonly = readonly
        self.uids = folder.uids
        self.last_uid = self.uids[-1] if self.uids else 0
        self.expunged = NOTHING
        self.changed = NOTHING
        self.recent = NOTHING
        self.condstore = False
        self.keywords = len(folder.keywords)

    def forget(self, uids):
        """Drops messages from this numbering (an EXPUNGE it is about to send): C{* n EXPUNGE} lines."""
        out = []
        gone = set()
        for uid in sorted(uids, reverse=True):
            seq = self.seq_of(uid)
            if seq is not None:
                gone.add(uid)
                out.append(b"* %d EXPUNGE\r\n" % seq)
        if gone:
            self.uids = [u for u in self.uids if u not in gone]
        if self.recent:
            self.recent = self.recent - set(uids)
        return out


    def seq_of(self, uid):
        position = bisect.bisect_left(self.uids, uid)
        if position < len(self.uids) and self.uids[position] == uid:
            return position + 1
        return None

    def rejoin(self):
        """Shares the folder's list again once this numbering is the folder's (after an EXPUNGE, or new mail)."""
        folder = self.folder
        if self.uids is not folder.uids and len(self.uids) == len(folder.uids) and self.uids == folder.uids:
            self.uids = folder.uids

    def flags_of(self, uid):
        msg = self.folder.get(uid)
        flags = msg.flags if msg is not None else frozenset()
        if uid in self.recent:
            return flags | RECENT
        return flags

    def numbered(self, uids):
        """
        C{(seq, uid, msg, flags)} of each of C{uids} that this view numbers
        and the folder still has: L{seq_of} and L{flags_of} for a whole
        FETCH in one call, as they were a tenth of its cost.
        """
        get, recent, own = self.folder.get, self.recent, self.uids
        count = len(own)
        if uids:
            # 1:* and other runs of this view's own numbering (the usual
            # FETCH of a mail client's resync) need no search per message.
            first = bisect.bisect_left(own, uids[0])
            if own[first:first + len(uids)] == uids:
                for seq, uid in enumerate(uids, first + 1):
                    msg = get(uid)
                    if msg is not None:
                        yield seq, uid, msg, (msg.flags | RECENT) if uid in recent else msg.flags
                return
        for uid in uids:
            msg = get(uid)
            position = bisect.bisect_left(own, uid)
            if msg is None or position == count or own[position] != uid:
                continue
            yield position + 1, uid, msg, (msg.flags | RECENT) if uid in recent else msg.flags

    def updates(self, allow_expunge=True):
        """Untagged responses that bring the session up to date (RFC 3501 7.4.1, RFC 7162 3.2)."""
        out = []
        if self.keywords != len(self.folder.keywords):
            out.append(self.flags_lines())
        if allow_expunge and self.expunged:
            out.extend(self.forget(self.expunged))
            self.folder.release_ghosts(self, self.expunged)
            self.expunged = NOTHING
        folder = self.folder
        if folder.uidnext - 1 > self.last_uid:
            position = bisect.bisect_right(folder.uids, self.last_uid)
            fresh = folder.uids[position:]
            if fresh:
                self.uids = self.uids + fresh
                self.last_uid = fresh[-1]
                if self.recent:
                    self.recent = {u for u in self.recent if self.seq_of(u) is not None}
                out.append(b"* %d EXISTS\r\n* %d RECENT\r\n" % (len(self.uids), len(self.recent)))
            else:
                self.last_uid = folder.uidnext - 1
        self.rejoin()
        if self.changed:
            for uid in sorted(self.changed):
                seq = self.seq_of(uid)
                if seq is not None and uid not in self.expunged:
                    out.append(self.flag_line(seq, uid))
            self.changed = NOTHING
        return out

    def flags_lines(self):
        """C{* FLAGS} and C{PERMANENTFLAGS}, sent again whenever a keyword is new (RFC 3501 7.2.6)."""
        self.keywords = len(self.folder.keywords)
        flags = " ".join(list(SYSTEM_FLAGS) + sorted(self.folder.keywords)).encode()
        return b"* FLAGS (%s)\r\n* OK [PERMANENTFLAGS (%s \\*)] Flags permitted\r\n" % (flags, flags)

    def flag_line(self, seq, uid, with_uid=True):
        items = b"FLAGS " + fetch.flag_list(self.flags_of(uid))
        if with_uid:
            items = b"UID %d " % uid + items
        if self.condstore:
            msg = self.folder.get(uid)
            items += b" MODSEQ (%d)" % (msg.modseq if msg else self.folder.highestmodseq)
        return b"* %d FETCH (%s)\r\n" % (seq, items)

    def close(self):
        self.folder.close_view(self)


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
        d = self.account.run(index.take_new, self.account.root, self.name)
        return d.addCallback(lambda found: self.add([f + ("",) for f in found]))

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


def _close(db, spare_files):
    db.close()
    remove_if_there(*spare_files)


def _flag_rows(batch):
    return sum(len(rows) for _, rows, _ in batch)


def _flags_then(db, batch, function, args):
    """On the worker: the waiting flag changes, then C{function}; a failure of the first does not stop the second."""
    try:
        index.update_flags_many(db, batch)
        flags_failure = None
    except Exception:
        flags_failure = Failure()
    return flags_failure, function(db, *args)


class Account:
    """
    One mailbox (address) while any session uses it: its index, and the
    folders loaded so far, kept until the last session leaves so that
    SELECT after SELECT does not reload them.
    """

    def __init__(self, store, address, root, db):
        self.store = store
        self.address = address
        self.root = root
        self.db = db
        self.folders = {}
        self._loading = {}
        self._folder_list = None
        self.users = 0
        self._flags_saving = []
        self._flags_waiting = []
        self._flags_timer = None
        self._on_worker = 0
        self._inline_calls = 0
        self.spares = spares.SpareFiles()

    def run(self, function, *args, rows=None):
        """
        Index work and file moves, in the order asked.  A small piece
        (C{rows}, the rows or files it touches, at most L{INLINE_ROWS})
        runs at once on the reactor thread when none of this account's
        work is on the worker, else after that work on the worker.  Every
        L{CHECKPOINT_EVERY} such pieces, a checkpoint goes to the worker
        first and the piece follows it there.  A sqlite commit
        here is a write to the WAL in the page cache (synchronous=NORMAL,
        and checkpoints, which fsync, run on the worker: see
        L{index.open_index}), a few tens of microseconds; a trip to a
        thread and back costs the reactor about a hundred microseconds
        of CPU in wake-ups, more than the work it carries
        (C{bench/handoff.py}).
        """
        if rows is not None and rows <= INLINE_ROWS and not self._on_worker:
            self._inline_calls += 1
            if self._inline_calls < CHECKPOINT_EVERY:
                return defer.execute(function, *args)
            self._inline_calls = 0
            self.run(index.checkpoint, self.db)
        self._on_worker += 1
        return self.store.run(function, *args).addBoth(self._left_worker)

    def _left_worker(self, result):
        self._on_worker -= 1
        return result

    def run_files(self, function, *args):
        return self.store.run_files(function, *args)

    def run_db(self, function, *args, rows=None):
        """Index work, in order (see L{run}); flag changes still waiting are written first, in the same call."""
        if not self._flags_waiting:
            return self.run(function, self.db, *args, rows=rows)
        batch = self._start_saving()

        def done(outcome):
            if isinstance(outcome, Failure):
                self._saved(batch, None)
                return outcome
            flags_failure, result = outcome
            self._saved(batch, flags_failure)
            return result
        rows = None if rows is None else rows + _flag_rows(batch)
        return self.run(_flags_then, self.db, batch, function, args, rows=rows).addBoth(done)

    def save_flags(self, name, rows, modseq):
        """
        Records a STORE in the index without holding up its answer: the
        folder in memory is the authority while it is open, and flags are
        not mail (the index already commits with synchronous=NORMAL).  A
        change waits L{FLAGS_DELAY} for company: changes from every
        session, and any other index work (an EXPUNGE after a STORE of
        C{\\Deleted}), go in one index call.  What arrives while a write is
        under way on the worker goes into the next one.
        """
        self._flags_waiting.append((name, rows, modseq))
        if self._flags_timer is None and not self._flags_saving:
            self._flags_timer = self.store.call_later(FLAGS_DELAY, self._save_waiting_flags)

    def cancel_flag_timer(self):
        if self._flags_timer is not None:
            if self._flags_timer.active():
                self._flags_timer.cancel()
            self._flags_timer = None

    def _start_saving(self):
        self.cancel_flag_timer()
        batch, self._flags_waiting = self._flags_waiting, []
        self._flags_saving.append(batch)
        return batch

    def _save_waiting_flags(self):
        batch = self._start_saving()
        d = self.run(index.update_flags_many, self.db, batch, rows=_flag_rows(batch))
        d.addCallbacks(lambda _: self._saved(batch, None), lambda f: self._saved(batch, f))

    def _saved(self, batch, failure):
        if failure is not None:
            self.store.log.failure("flag changes not saved in {root}", failure, root=self.root)
        self._flags_saving = [b for b in self._flags_saving if b is not batch]
        if self._flags_waiting and not self._flags_saving and self._flags_timer is None:
            self._save_waiting_flags()

    def unsaved_flags(self):
        """Flag changes not yet known to be in the index, oldest first (writing them again is harmless)."""
        return [change for batch in self._flags_saving for change in batch] + self._flags_waiting

    def folder(self, name):
        """Deferred firing with the loaded L{Folder}, or C{None} if there is no such folder."""
        if name in self.folders:
            return defer.succeed(self.folders[name])
        waiters = self._loading.get(name)
        if waiters is None:
            waiters = self._loading[name] = []

            def loaded(result):
                for waiter in self._loading.pop(name):
                    if result is not None and name not in self.folders:
                        self.folders[name] = Folder(self, name, *result)
                        self.store.watch(self.folders[name])
                    waiter.callback(self.folders.get(name))

            def failed(failure):
                for waiter in self._loading.pop(name):
                    waiter.errback(failure)
            self.run_db(index.load_folder, self.root, name).addCallbacks(loaded, failed)
        waiting = defer.Deferred()
        waiters.append(waiting)
        return waiting

    def loaded(self, name):
        """The L{Folder} if it is loaded, else C{None} (and L{folder} loads it)."""
        return self.folders.get(name)

    def known_folder_list(self):
        """What L{folder_list} gives, if it is cached; else C{None}."""
        return None if self._folder_list is None else list(self._folder_list)

    def folder_list(self):
        """Deferred firing with [(name, subscribed)]; cached, as only this process changes it."""
        if self._folder_list is not None:
            return defer.succeed(list(self._folder_list))

        def keep(listing):
            self._folder_list = listing
            return list(listing)
        return self.run_db(index.list_folders).addCallback(keep)

    def change_folders(self, function, *args):
        """Runs a CREATE/DELETE/RENAME/SUBSCRIBE on the index and forgets the cached list."""
        self._folder_list = None
        d = self.run_db(function, *args)

        def done(result):
            self._folder_list = None
            return result
        return d.addBoth(done)

    def forget(self, name):
        """Drops a folder (and its children) deleted or renamed under the sessions' feet."""
        for key in [k for k in self.folders if k == name or k.startswith(name + ".")]:
            self.store.unwatch(self.folders.pop(key))


class MailStore:
    """
    Opens accounts on demand and shares them between sessions; owns the
    worker thread.  C{notifier} (a C{twisted.internet.inotify.INotify})
    lets new deliveries reach IDLE sessions at once; without it they are
    found on NOOP, CHECK and IDLE.
    """

    log = Logger()

    def __init__(self, data_dir, reactor, notifier=None, cache_bytes=32 * 1024 * 1024, closed=lambda address: None):
        self.data_dir = data_dir
        self.closed = closed
        """Called with an address once its account is closed and its flags written: another process may open it."""
        self.cache = MessageCache(cache_bytes)
        self._reactor = reactor
        self._pool = WorkerThreads(reactor, 1, "trekmail-mailstore")
        self._files = WorkerThreads(reactor, 4, "trekmail-mailfiles")
        self._stopped = False
        self._accounts = {}
        self._notifier = notifier
        self._watched = {}

    def start(self):
        self._pool.start()
        self._files.start()

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        self._files.stop()
        self._pool.stop()
        for account in self._accounts.values():
            if not isinstance(account, defer.Deferred):
                account.cancel_flag_timer()
                index.update_flags_many(account.db, account.unsaved_flags())
                account.db.close()
                remove_if_there(*account.spares.drain())
        self._accounts.clear()

    def seconds(self):
        return self._reactor.seconds()

    def call_later(self, delay, function, *args):
        return self._reactor.callLater(delay, function, *args)

    def run(self, function, *args):
        """On the one worker that owns the indexes and moves files: runs in submission order."""
        return self._pool.run(function, *args)

    def run_files(self, function, *args):
        """
        Writing (and fsyncing) new files and reading messages need no
        order, so they run on several threads: an fsync must not hold up
        every other session's index work.
        """
        return self._files.run(function, *args)

    @defer.inlineCallbacks
    def open_account(self, address):
        while isinstance(self._accounts.get(address), defer.Deferred):
            yield self._accounts[address]
        account = self._accounts.get(address)
        if account is None:
            pending = defer.Deferred()
            self._accounts[address] = pending
            root = maildir_path(self.data_dir, address)
            try:
                db = yield self.run(index.open_index, root)
            except BaseException:
                del self._accounts[address]
                pending.callback(None)
                raise
            account = Account(self, address, root, db)
            self._accounts[address] = account
            pending.callback(None)
        account.users += 1
        return account

    def release(self, account):
        account.users -= 1
        if account.users == 0 and self._accounts.get(account.address) is account:
            del self._accounts[account.address]
            for folder in list(account.folders.values()):
                self.unwatch(folder)
            d = account.run_db(_close, account.spares.drain())
            d.addCallback(lambda _: self.closed(account.address))
            d.addErrback(lambda f: self.log.failure("closing {root} failed", f, root=account.root))

    def watch(self, folder):
        if self._notifier is None:
            return
        path = FilePath(index.folder_dir(folder.account.root, folder.name)).child("new")

        def changed(_, filepath, mask):
            folder.poll(force=True).addErrback(lambda f: self.log.failure("pick-up failed", f))
        try:
            self._notifier.watch(path, inotify.IN_MOVED_TO | inotify.IN_CREATE, callbacks=[changed])
        except inotify.INotifyError as e:
            self.log.warn("cannot watch {path} ({error}); new mail shows on NOOP and IDLE only",
                          path=path.path, error=e)
            return
        self._watched[folder] = path
        folder.watched = True

    def unwatch(self, folder):
        path = self._watched.pop(folder, None)
        folder.watched = False
        if path is not None:
            try:
                self._notifier.ignore(path)
            except KeyError:
                self.log.info("{path} was no longer watched (moved by RENAME)", path=path.path)
