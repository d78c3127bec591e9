"""
C{trekmail backup DIR} and C{trekmail restore DIR}.

A backup runs beside a live server and still gives a copy that opens
as one moment's state:

 - the realm database (wherever it is, whatever its name) and every
   sqlite file under the data directory (each mailbox's IMAP index) is
   copied with sqlite's online backup API, a snapshot taken under a read
   transaction (WAL: writers go on), never file by file;
 - the indexes are copied before any mail, so every message an index
   names is already on disk.  A Maildir message file is never rewritten
   while it has its name in C{new/} or C{cur/}; once expunged it waits in
   the folder's C{tmp/}, where an APPEND may rewrite it in place as a
   spare (L{trekmail.imap.spares}).  So mail is taken only by its name in
   C{new/} or C{cur/}, never from C{tmp/}: hard-linked when the backup is
   on the same file system (a file with a second link is never reused as
   a spare), else copied and kept only if its name still holds the same
   file once the copy is done (names are never reused, so it was never a
   spare meanwhile).  A message expunged as the backup ran is dropped
   from that index's copy;
 - C{new/} is read before C{cur/}, so a message picked up in between
   is found in one of them; what arrives after its index was copied is
   in the backup as new mail;
 - every Maildir's C{cur/}, C{new/} and C{tmp/} is in the backup, empty
   or not, and a restore makes every directory the backup has;
 - everything else under the data directory (DKIM keys, the secrets key,
   the TLS pair and admin token where they are by default, the queue
   spool, DAV collections) is copied, and such files configured outside
   the data directory go under C{external/};
 - C{manifest.json}, written last, names the format: a directory without
   it is an unfinished backup, which L{restore} refuses.

Restoring the queue spool resumes its deliveries on the restored server:
a message that the old server delivered after the backup is sent again.
"""

import dataclasses
import datetime
import json
import os
import shutil
import sqlite3

from trekmail.durable import fsync_directory, remove_if_there, write_file
from trekmail.imap.index import INDEX_NAME, folder_dir
from trekmail.realm.errors import InvalidInput

FORMAT = 1
MANIFEST = "manifest.json"
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a server keeps its data: the data directory, the database, and key files by name."""

    data_dir: str
    database: str
    keys: dict


def _inside(path, directory):
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == os.path.abspath(directory)


def _is_empty(path):
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def _snapshot(source, target):
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    src = sqlite3.connect(source, timeout=10)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)


def _linked(source, target, link):
    """
    Makes C{target}'s directory and, when C{link}, hard-links C{source}
    as C{target}: whether it did.  A file system refusing the link leaves
    a copy to the caller; a vanished C{source} raises C{FileNotFoundError}.
    """
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    if not link:
        return False
    try:
        os.link(source, target)
        return True
    except FileNotFoundError:
        raise
    except OSError:
        return False


def _copy(source, target, link):
    if not _linked(source, target, link):
        shutil.copy2(source, target)


def _copy_mail(source, target, link):
    """
    Takes a message file by its Maildir name (see the module docstring);
    C{FileNotFoundError} when it left that name before a copy was done.
    """
    if _linked(source, target, link):
        return
    before = os.stat(source)
    try:
        shutil.copy2(source, target)
        after = os.stat(source)
        kept = (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    except FileNotFoundError:
        kept = False
    if not kept:
        remove_if_there(target)
        raise FileNotFoundError(source)


def _is_maildir_part(directory):
    parent = os.path.dirname(directory)
    return os.path.basename(directory) in ("cur", "new", "tmp") and os.path.isdir(os.path.join(parent, "cur"))


_ORDER = {"queue": 0, "new": 0, "cur": 2, "mail": 2}


def _with_side_files(path):
    return [path] + [path + suffix for suffix in _SQLITE_SIDE_FILES]


def _walk(data_dir, database):
    """
    Relative paths of the files to copy (no sqlite files, nor the realm
    C{database} whatever its name, no Maildir C{tmp/}): each Maildir's
    C{new/} before its C{cur/}, and the queue before the mail, so that a
    message delivered while the backup runs is in one of them (in both,
    it is delivered again after a restore).
    """
    skip = set(_with_side_files(os.path.abspath(database)))
    for directory, subdirs, files in os.walk(data_dir):
        subdirs.sort(key=lambda d: _ORDER.get(d, 1))
        subdirs[:] = [d for d in subdirs if not (d == "tmp" and os.path.isdir(os.path.join(directory, "cur")))]
        for name in files:
            if name.endswith(".sqlite") or any(name.endswith(".sqlite" + s) for s in _SQLITE_SIDE_FILES):
                continue
            if os.path.abspath(os.path.join(directory, name)) in skip:
                continue
            yield os.path.relpath(os.path.join(directory, name), data_dir), _is_maildir_part(directory)


def _maildir_parts(data_dir):
    """
    The relative C{cur/}, C{new/} and C{tmp/} of every Maildir under
    C{data_dir}: kept in the backup even when empty (C{tmp/} always is
    there), since the server opens a folder by listing all three.
    """
    for directory, subdirs, _ in os.walk(data_dir):
        if "cur" in subdirs:
            for part in ("cur", "new", "tmp"):
                yield os.path.relpath(os.path.join(directory, part), data_dir)


def _sqlite_files(data_dir, database):
    """The sqlite files under C{data_dir} to snapshot: the realm C{database} first when it is there, whatever its name."""
    if os.path.exists(database) and _inside(database, data_dir):
        yield os.path.relpath(database, data_dir)
    for directory, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith(".sqlite") and os.path.abspath(path) != os.path.abspath(database):
                yield os.path.relpath(path, data_dir)


def _complete_index(live_root, saved_root, link):
    """Makes the saved index and the saved files agree (see the module docstring); how many rows were dropped."""
    db = sqlite3.connect(os.path.join(saved_root, INDEX_NAME))
    dropped = 0
    try:
        for folder, filename in db.execute("SELECT folder, filename FROM messages").fetchall():
            saved = os.path.join(folder_dir(saved_root, folder), "cur", filename)
            if os.path.exists(saved):
                continue
            try:
                _copy_mail(os.path.join(folder_dir(live_root, folder), "cur", filename), saved, link)
            except FileNotFoundError:
                db.execute("DELETE FROM messages WHERE folder = ? AND filename = ?", (folder, filename))
                dropped += 1
        db.commit()
    finally:
        db.close()
    return dropped


def _same_device(a, b):
    return os.stat(a).st_dev == os.stat(b).st_dev


def backup(layout, target):
    """Writes a backup of C{layout}'s server into the empty or new directory C{target}; a summary."""
    if not _is_empty(target):
        raise InvalidInput("%s is not empty: a backup goes into a new or empty directory" % (target,))
    data = os.path.join(target, "data")
    os.makedirs(data, mode=0o700, exist_ok=True)
    link = _same_device(layout.data_dir, data)
    external = {}
    if os.path.exists(layout.database) and not _inside(layout.database, layout.data_dir):
        _snapshot(layout.database, os.path.join(target, "external", "database"))
        external["database"] = "external/database"
    indexes = []
    for relative in _sqlite_files(layout.data_dir, layout.database):
        _snapshot(os.path.join(layout.data_dir, relative), os.path.join(data, relative))
        if os.path.basename(relative) == INDEX_NAME:
            indexes.append(os.path.dirname(relative))
    for relative in _maildir_parts(layout.data_dir):
        os.makedirs(os.path.join(data, relative), mode=0o700, exist_ok=True)
    files = 0
    for relative, mail in _walk(layout.data_dir, layout.database):
        try:
            if mail:
                _copy_mail(os.path.join(layout.data_dir, relative), os.path.join(data, relative), link)
            else:
                _copy(os.path.join(layout.data_dir, relative), os.path.join(data, relative), False)
            files += 1
        except FileNotFoundError:
            continue
    dropped = sum(_complete_index(os.path.join(layout.data_dir, r), os.path.join(data, r), link) for r in indexes)
    for name, path in sorted(layout.keys.items()):
        if path and os.path.exists(path) and not _inside(path, layout.data_dir):
            _copy(path, os.path.join(target, "external", name), False)
            external[name] = "external/" + name
    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data_dir": os.path.abspath(layout.data_dir),
        "mailboxes": len(indexes),
        "files": files,
        "external": external,
    }
    write_file(os.path.join(target, MANIFEST), json.dumps(manifest, indent=2).encode() + b"\n")
    fsync_directory(target)
    return dict(manifest, backup=os.path.abspath(target), dropped_expunged=dropped)


def read_manifest(source):
    try:
        with open(os.path.join(source, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise InvalidInput("%s has no %s: not a backup, or an unfinished one" % (source, MANIFEST)) from None
    except ValueError as e:
        raise InvalidInput("%s/%s is damaged: %s" % (source, MANIFEST, e)) from None
    if manifest.get("format") != FORMAT:
        raise InvalidInput("%s is backup format %r; this TrekMail reads format %d"
                           % (source, manifest.get("format"), FORMAT))
    return manifest


def _is_sqlite(path):
    with open(path, "rb") as f:
        return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC


def _put(saved, destination):
    """
    Restores one file over whatever is at C{destination}.  A database's
    old C{-wal}, C{-shm} and C{-journal} go first: SQLite would otherwise
    replay the old server's log over the restored pages.
    """
    remove_if_there(*(_with_side_files(destination) if _is_sqlite(saved) else [destination]))
    _copy(saved, destination, False)


def restore(layout, source, force=False):
    """
    Copies a backup into C{layout}'s places: the data directory must be
    empty (or C{force}), and the server stopped; a summary.
    """
    manifest = read_manifest(source)
    targets = {name: layout.database if name == "database" else layout.keys.get(name)
               for name in manifest["external"]}
    if not force:
        if not _is_empty(layout.data_dir):
            raise InvalidInput("the data directory %s is not empty (--force restores over it)" % (layout.data_dir,))
        there = [path for path in targets.values() if path and os.path.exists(path)]
        if there:
            raise InvalidInput("%s already exist (--force restores over them)" % (", ".join(there),))
    data = os.path.join(source, "data")
    files = 0
    for directory, _, names in os.walk(data):
        os.makedirs(os.path.join(layout.data_dir, os.path.relpath(directory, data)), mode=0o700, exist_ok=True)
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), data)
            _put(os.path.join(directory, name), os.path.join(layout.data_dir, relative))
            files += 1
    for name, relative in manifest["external"].items():
        if targets[name]:
            _put(os.path.join(source, relative), targets[name])
            os.chmod(targets[name], 0o600)
    return {"restored": os.path.abspath(source), "data_dir": os.path.abspath(layout.data_dir), "files": files,
            "backup_created": manifest["created"]}
