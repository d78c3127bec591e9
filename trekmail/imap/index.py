"""
The persistent index of one mailbox (an address): for every folder its
UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, and for every message its UID,
Maildir file, flags, MODSEQ, size, INTERNALDATE and cached structure.

One sqlite file per mailbox, beside the Maildir it describes, so that a
mailbox can be moved or restored as one directory and a busy account never
waits on another's writes.  Every function here blocks (file system,
sqlite): the mail store runs them on its worker thread, or, when small and
nothing of the account's is on the worker, at once on the reactor thread,
always in the order asked (L{trekmail.imap.store.Account.run}); that order
is also what makes pick-up from C{new/} safe against several sessions.
Those that need the time take it as C{now}, read from the store's clock
by the caller: a test's clock then rules UIDVALIDITY, file names and the
age of C{tmp/} files alike.

The Maildir stays the message store of record: delivery writes into
C{new/}; pick-up moves a file to C{cur/} and gives it the next UID in the
same transaction, so a UID, once given, never changes.  Expunged files go
to C{tmp/} until no session can still FETCH them, and some stay there for
a later APPEND to write into (L{trekmail.imap.spares}); Maildir readers
delete stale C{tmp/} files anyway.
"""

import os
import re

from trekmail.durable import fsync_directory, publish, remove_if_there, write_file
from trekmail.imap import spares, subscriptions
from trekmail.mailstore import folder_path as folder_dir, unique_name
from trekmail.realm import database
from trekmail.realm.database import Schema

INDEX_NAME = "trekmail-index.sqlite"
BUSY_TIMEOUT_MS = 250
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk", "Archive": "\\Archive"}

INDEX = Schema(
    "imap-index",
    (
        """
        CREATE TABLE folders (
            name TEXT PRIMARY KEY,
            uidvalidity INTEGER NOT NULL,
            uidnext INTEGER NOT NULL,
            highestmodseq INTEGER NOT NULL,
            subscribed INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE messages (
            folder TEXT NOT NULL,
            uid INTEGER NOT NULL,
            filename TEXT NOT NULL,
            flags TEXT NOT NULL,
            modseq INTEGER NOT NULL,
            size INTEGER NOT NULL,
            internaldate INTEGER NOT NULL,
            structure BLOB,
            PRIMARY KEY (folder, uid)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE arriving (
            folder TEXT NOT NULL,
            filename TEXT NOT NULL,
            flags TEXT NOT NULL,
            PRIMARY KEY (folder, filename)
        ) WITHOUT ROWID;
        CREATE TABLE imported (
            source TEXT NOT NULL,
            folder TEXT NOT NULL,
            validity TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (source, folder)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE uidvalidity (last INTEGER NOT NULL);
        INSERT INTO uidvalidity SELECT COALESCE(MAX(uidvalidity), 0) FROM folders
        """,
    ),
)
"""
The second migration is the import's (L{trekmail.admin.importtarget}): flags for files it puts in C{new/}, and where each source folder's copy got to.
The third keeps the last UIDVALIDITY given, so a folder deleted and created again gets a greater one even
within the same second (RFC 3501 2.3.1.1): the folders' own rows leave with them.
"""


def _make_maildir(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)


def _make_level(path):
    """
    A folder's directory, inside a mailbox directory that must exist: a
    session still open on a mailbox just renamed or deleted (closed within
    L{trekmail.imap.sessions.RECHECK_INTERVAL}) fails its CREATE rather
    than bring the old address's Maildir back.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


def open_index(root, now):
    """Opens (creating on first login) the index and the special-use folders."""
    _make_maildir(root)
    db = database.connect(os.path.join(root, INDEX_NAME))
    # Small writes commit on the reactor thread; the fsyncs of a checkpoint must not (see checkpoint()).
    db.execute("PRAGMA wal_autocheckpoint=0")
    # No other TrekMail process opens this index (leases), so a lock held elsewhere is someone's tool: give up
    # soon rather than hold the reactor thread the connection's usual ten seconds.
    db.execute("PRAGMA busy_timeout=%d" % BUSY_TIMEOUT_MS)
    database.upgrade(db, (INDEX, subscriptions.SUBSCRIPTIONS))
    for name in ["INBOX"] + list(SPECIAL_USE):
        # The folders the server makes itself it also subscribes: clients that list with LSUB show them.
        if create_folder(db, root, name, now, exist_ok=True):
            subscriptions.subscribe(db, name, True)
    return db


def checkpoint(db):
    """Copies the WAL into the index, fsyncing both: the store runs this on its worker now and then."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _new_uidvalidity(db, now):
    value = max(int(now), db.execute("SELECT last FROM uidvalidity").fetchone()[0] + 1)
    db.execute("UPDATE uidvalidity SET last = ?", (value,))
    return value


def create_folder(db, root, name, now, exist_ok=False):
    if db.execute("SELECT 1 FROM folders WHERE name = ?", (name,)).fetchone():
        if exist_ok:
            return False
        raise FileExistsError(name)
    path = folder_dir(root, name)
    if path != root:
        _make_level(path)
    _make_maildir(path)
    db.execute("INSERT INTO folders (name, uidvalidity, uidnext, highestmodseq) VALUES (?, ?, 1, 1)",
               (name, _new_uidvalidity(db, now)))
    return True


def delete_folder(db, root, name):
    path = folder_dir(root, name)
    with database.transaction(db):
        db.execute("DELETE FROM messages WHERE folder = ?", (name,))
        db.execute("DELETE FROM folders WHERE name = ?", (name,))
    for sub in ("cur", "new", "tmp"):
        directory = os.path.join(path, sub)
        for entry in os.listdir(directory) if os.path.isdir(directory) else ():
            os.unlink(os.path.join(directory, entry))
        if os.path.isdir(directory):
            os.rmdir(directory)
    if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)


def rename_folder(db, root, old, new, now):
    """Renames a folder and its children; INBOX is moved, leaving an empty INBOX (RFC 3501 6.3.5)."""
    # An exact prefix, not LIKE: "_" would be a wildcard there and case would be ignored, moving unrelated folders.
    children = old + "."
    names = [r[0] for r in db.execute("SELECT name FROM folders WHERE name = ? OR substr(name, 1, ?) = ?",
                                      (old, len(children), children))]
    with database.transaction(db):
        for name in names:
            target = new + name[len(old):]
            if name == "INBOX":
                create_folder(db, root, target, now)
                moved = db.execute("SELECT uid, filename FROM messages WHERE folder = 'INBOX'").fetchall()
                for row in moved:
                    os.rename(os.path.join(root, "cur", row[1]), os.path.join(folder_dir(root, target), "cur", row[1]))
                db.execute("UPDATE messages SET folder = ? WHERE folder = 'INBOX'", (target,))
                db.execute("UPDATE folders SET uidnext = (SELECT uidnext FROM folders WHERE name = 'INBOX')"
                           " WHERE name = ?", (target,))
                db.execute("UPDATE folders SET uidvalidity = ? WHERE name = 'INBOX'", (_new_uidvalidity(db, now),))
                continue
            os.rename(folder_dir(root, name), folder_dir(root, target))
            db.execute("UPDATE folders SET name = ? WHERE name = ?", (target, name))
            db.execute("UPDATE messages SET folder = ? WHERE folder = ?", (target, name))
        subscriptions.rename(db, old, new)


class Listing:
    """The folders' names and the subscribed names, each sorted: what LIST and LSUB answer from."""

    __slots__ = ("names", "subscribed")

    def __init__(self, names, subscribed):
        self.names, self.subscribed = names, subscribed


def list_folders(db):
    return Listing(tuple(r[0] for r in db.execute("SELECT name FROM folders ORDER BY name")),
                   tuple(subscriptions.names(db)))


_UNIQUE = re.compile(r"(\d{1,20})\.(?:M(\d{1,9})P(\d{1,20})Q(\d{1,20}))?")


def arrival_order(filename):
    """
    Sort key of Maildir file names in the order they were delivered, for
    the UIDs given them: the time and counter of the name's C{M}, C{P}
    and C{Q} parts as numbers, so that an unpadded C{M5} (as names were
    once written) still comes before C{M40}.  Another writer's name sorts
    by its seconds, then as text.
    """
    match = _UNIQUE.match(filename)
    if match is None:
        return (0, 0, 0, 0, filename)
    return tuple(int(part or 0) for part in match.groups()) + (filename,)


def load_folder(db, root, name, now):
    """
    The folder row and its messages in UID order.  Files in C{cur/} that
    the index does not know (a crash between moving a file and recording
    it) and whatever delivery left in C{new/} get the next UIDs here.
    """
    row = db.execute("SELECT uidvalidity, uidnext, highestmodseq FROM folders WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    uidvalidity, uidnext, modseq = row
    messages = [tuple(m) for m in db.execute(
        "SELECT uid, filename, flags, modseq, size, internaldate FROM messages WHERE folder = ? ORDER BY uid",
        (name,))]
    known = {m[1] for m in messages}
    _clean_tmp(os.path.join(folder_dir(root, name), "tmp"), now)
    cur = os.path.join(folder_dir(root, name), "cur")
    found = []
    for entry in sorted(os.listdir(cur), key=arrival_order):
        if entry not in known and not entry.startswith("."):
            info = os.stat(os.path.join(cur, entry))
            found.append((entry, info.st_size, int(info.st_mtime), ""))
    found += take_new(db, root, name)
    if found:
        modseq += 1
        rows = []
        for filename, size, mtime, flags in found:
            rows.append((uidnext, filename, flags, modseq, size, mtime))
            uidnext += 1
        insert_rows(db, name, rows, uidnext, modseq)
        messages += rows
    return (uidvalidity, uidnext, modseq), messages, [r[0] for r in rows] if found else []


def _clean_tmp(path, now, age=36 * 3600):
    """Deletes C{tmp/} files older than 36 hours, as Maildir readers do (expunged files left by a crash)."""
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        try:
            if os.stat(full).st_mtime < now - age:
                os.unlink(full)
        except FileNotFoundError:
            continue


def take_new(db, root, name):
    """
    Moves what delivery left in C{new/} to C{cur/}: (filename, size,
    mtime, flags text) for each.  Delivery's files arrive unflagged; an
    import states its files' flags in C{arriving} before they appear.
    C{new/} is listed before C{arriving} is read: a row committed after
    the listing belongs to a file the listing cannot hold yet (the import
    commits, then moves), so every file listed has its row read.
    """
    path = folder_dir(root, name)
    new_dir = os.path.join(path, "new")
    try:
        entries = sorted((e for e in os.listdir(new_dir) if not e.startswith(".")), key=arrival_order)
    except FileNotFoundError:
        return []
    staged = dict(db.execute("SELECT filename, flags FROM arriving WHERE folder = ?", (name,)).fetchall())
    moved = []
    for entry in entries:
        source = os.path.join(new_dir, entry)
        try:
            info = os.stat(source)
        except FileNotFoundError:
            continue
        filename = entry.split(":", 1)[0] + ":2,"
        os.rename(source, os.path.join(path, "cur", filename))
        moved.append((filename, info.st_size, int(info.st_mtime), staged.get(entry, "")))
    if staged and moved:
        db.executemany("DELETE FROM arriving WHERE folder = ? AND filename = ?",
                       [(name, filename.split(":", 1)[0]) for filename, _, _, _ in moved])
    return moved


def _set_counters(db, name, uidnext, highestmodseq):
    db.execute("UPDATE folders SET uidnext = MAX(uidnext, ?), highestmodseq = MAX(highestmodseq, ?)"
               " WHERE name = ?", (uidnext, highestmodseq, name))


def insert_rows(db, name, rows, uidnext, highestmodseq):
    """C{rows}: (uid, filename, flags, modseq, size, internaldate[, structure]) each."""
    with database.transaction(db):
        db.executemany("INSERT OR REPLACE INTO messages"
                       " (folder, uid, filename, flags, modseq, size, internaldate, structure)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(name,) + tuple(r[:7]) + (None,) * (7 - len(r))
                                                            for r in rows])
        _set_counters(db, name, uidnext, highestmodseq)


def write_message(root, name, data, internaldate, now, spare=None):
    """
    Writes one message into C{cur/}, the file and then its new name
    fsynced (APPEND's OK promises the message survives a crash); the
    caller indexes it.  C{spare}, a dead message's file (L{spares}), is
    written over when it can be, sparing an inode's free and allocation.
    """
    path = folder_dir(root, name)
    filename = unique_name(now) + ":2,"
    temporary = os.path.join(path, "tmp", filename)
    fd = None if spare is None else spares.reopen(spare, temporary)
    write_file(temporary, data, fd=fd, mtime=internaldate)
    publish(temporary, os.path.join(path, "cur", filename))
    return filename


def link_messages(root, source, target, filenames, now):
    """Hard-links messages into another folder, so a COPY costs no data; C{None} for a vanished one."""
    source_dir, target_dir = folder_dir(root, source), folder_dir(root, target)
    out = []
    for old in filenames:
        filename = unique_name(now) + ":2,"
        for sub in ("cur", "tmp"):
            try:
                os.link(os.path.join(source_dir, sub, old), os.path.join(target_dir, "cur", filename))
                out.append(filename)
                break
            except FileNotFoundError:
                continue
        else:
            out.append(None)
    if any(out):
        fsync_directory(os.path.join(target_dir, "cur"))
    return out


def update_flags_many(db, batch):
    """C{batch}: (folder, [(uid, flags text, modseq)], highestmodseq) each, from any sessions, in one transaction."""
    if not batch:
        return
    with database.transaction(db):
        for name, changes, highestmodseq in batch:
            db.executemany("UPDATE messages SET flags = ?, modseq = ? WHERE folder = ? AND uid = ?",
                           [(flags, modseq, name, uid) for uid, flags, modseq in changes])
            _set_counters(db, name, 0, highestmodseq)


def delete_rows(db, root, name, records, highestmodseq, unneeded=frozenset(), keep=frozenset()):
    """
    Drops messages from the index, then their files: those in C{unneeded}
    at once, unless in C{keep}, the rest parked in C{tmp/} until no
    session needs them.  Returns the C{tmp/} paths of those in C{keep}.
    """
    path = folder_dir(root, name)
    with database.transaction(db):
        db.executemany("DELETE FROM messages WHERE folder = ? AND uid = ?", [(name, uid) for uid, _ in records])
        _set_counters(db, name, 0, highestmodseq)
    kept = []
    for _, filename in records:
        parked = os.path.join(path, "tmp", filename)
        try:
            if filename in unneeded and filename not in keep:
                os.unlink(os.path.join(path, "cur", filename))
            else:
                os.rename(os.path.join(path, "cur", filename), parked)
                if filename in keep:
                    kept.append(parked)
        except FileNotFoundError:
            pass
    return kept


def discard(root, name, filenames, keep=frozenset()):
    """Deletes parked files no session needs, but those in C{keep}: returns their paths."""
    path = os.path.join(folder_dir(root, name), "tmp")
    remove_if_there(*(os.path.join(path, f) for f in filenames if f not in keep))
    return [os.path.join(path, f) for f in filenames if f in keep]


def read_messages(root, name, filenames):
    """File contents by name; an expunged file is read from C{tmp/}, a vanished one is C{None}."""
    path = folder_dir(root, name)
    out = {}
    for filename in filenames:
        for sub in ("cur", "tmp"):
            try:
                with open(os.path.join(path, sub, filename), "rb") as f:
                    out[filename] = f.read()
                break
            except FileNotFoundError:
                out[filename] = None
    return out


def load_structures(db, name, uids):
    out = {}
    for start in range(0, len(uids), 500):
        chunk = uids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for uid, blob in db.execute("SELECT uid, structure FROM messages WHERE folder = ? AND structure"
                                    " IS NOT NULL AND uid IN (%s)" % marks, [name] + list(chunk)):
            out[uid] = blob
    return out


def save_structures(db, name, blobs):
    db.executemany("UPDATE messages SET structure = ? WHERE folder = ? AND uid = ?",
                   [(blob, name, uid) for uid, blob in blobs.items()])
