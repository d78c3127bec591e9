"""
Where an import writes: one TrekMail mailbox, while the server may be
serving it.

The running server is the authority on an open folder's UIDs (its
L{trekmail.imap.folder.Folder} in memory), so an import never gives UIDs
itself: it hands messages over the way delivery does, as files in the
folder's C{new/}, which the server picks up (inotify, NOOP, IDLE, SELECT)
and numbers.  What delivery cannot say, an import states in the index
first: the flags of each file it is about to put in C{new/} (table
C{arriving}, read by L{trekmail.imap.index.take_new}), and the INTERNALDATE
as the file's mtime, which pick-up reads.

Resuming: for every source folder, C{imported} records the source's
validity token (IMAP UIDVALIDITY) and the position (UID) of the last
message copied.  Each message is written and fsynced in the mailbox's
C{importing/} directory (outside any folder, so no Maildir reader deletes
it), then its C{arriving} row and the new position commit together, then
the file moves into C{new/}.  A run cut short at any point leaves either
nothing for that message (it is copied again) or a committed row whose
file waits in C{importing/} (the next run moves it): never two copies.
"""

import os

from trekmail.durable import discard, fsync_directory, publish, write_all
from trekmail.imap import flagnames, index, subscriptions
from trekmail.mailstore import maildir_path, unique_name
from trekmail.realm import database

STAGING = "importing"
BUSY_TIMEOUT_MS = 10000
"""The server holds the index's write lock for a few milliseconds at a time; an import may wait for it."""
MAX_KEYWORDS = 64
MAX_FLAG_LENGTH = 200
"""Keywords kept per message, and the longest kept: what a source states cannot grow one message's FLAGS answer without bound."""


class TooLarge(Exception):
    """A message over the size cap: it is skipped, and the import goes on."""


def stored_flags(flags):
    """
    The flags text an imported message is indexed with: only what a
    client may read back in C{FLAGS (...)} (L{flagnames.canonical}, so a
    source's C{\\seen} is C{\\Seen} and an C{X-Keywords: {25}} is
    dropped rather than sent as a literal's start), every system flag and
    at most L{MAX_KEYWORDS} keywords.
    """
    system, keywords = set(), []
    for name in flags:
        flag = flagnames.canonical(name)
        if flag is None or len(flag) > MAX_FLAG_LENGTH:
            continue
        if flag.startswith("\\"):
            system.add(flag)
        elif len(keywords) < MAX_KEYWORDS and flag not in keywords:
            keywords.append(flag)
    return " ".join(sorted(system) + sorted(keywords))


def target_name(parts):
    """
    A source folder's hierarchy (its names, the source's delimiter already
    split off) as a TrekMail folder name: levels joined by C{.}, the
    hierarchy delimiter here (Maildir++), so a C{.} or C{/} inside a level
    becomes C{_}.
    """
    cleaned = [p.replace(".", "_").replace("/", "_").strip() or "_" for p in parts]
    if cleaned[0].upper() == "INBOX":
        cleaned[0] = "INBOX"
    return ".".join(cleaned)


class Mailbox:
    """One mailbox's Maildir and index, opened by an import (see the module docstring)."""

    def __init__(self, data_dir, address, clock, max_size):
        self.root = maildir_path(data_dir, address)
        self.clock = clock
        self.max_size = max_size
        self.db = index.open_index(self.root, clock())
        self.db.execute("PRAGMA busy_timeout=%d" % BUSY_TIMEOUT_MS)
        self.staging = os.path.join(self.root, STAGING)
        os.makedirs(self.staging, mode=0o700, exist_ok=True)

    def close(self):
        self.db.close()

    def ensure_folder(self, name):
        """
        Creates the folder and every level above it, as CREATE does, and
        subscribes those it makes: a client that lists subscribed folders
        (LSUB) should show the imported mail as the old server's did.
        """
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            level = ".".join(parts[:depth])
            with database.transaction(self.db):
                if index.create_folder(self.db, self.root, level, self.clock(), exist_ok=True):
                    subscriptions.subscribe(self.db, level, True)

    def resume_point(self, source, folder, validity):
        """The position copying C{folder} of C{source} goes on after: 0 when never copied, or its validity changed."""
        row = self.db.execute("SELECT validity, position FROM imported WHERE source = ? AND folder = ?",
                              (source, folder)).fetchone()
        if row is None or row[0] != str(validity):
            return 0
        return row[1]

    def finish_staged(self, target):
        """Moves into C{new/} the files a cut-short run committed but did not move (see the module docstring)."""
        rows = self.db.execute("SELECT filename FROM arriving WHERE folder = ?", (target,)).fetchall()
        new = os.path.join(index.folder_dir(self.root, target), "new")
        moved = 0
        for (filename,) in rows:
            staged = os.path.join(self.staging, filename)
            if os.path.exists(staged):
                publish(staged, os.path.join(new, filename))
                moved += 1
        return moved

    def add(self, source, folder, validity, target, position, flags, internaldate, chunks):
        """
        Copies one message (C{chunks}, an iterable of bytes) into
        C{target} with its flags (as the source names them: L{stored_flags}) and INTERNALDATE
        (seconds since the epoch; None, a source stating none, is the
        import's clock, so a test's clock reaches it), and records
        C{position} as copied.
        Raises L{TooLarge} past the cap, having recorded the position.
        """
        now = self.clock()
        if internaldate is None:
            internaldate = now
        filename = unique_name(now)
        staged = os.path.join(self.staging, filename)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        size = 0
        try:
            try:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_size:
                        raise TooLarge("over %d bytes" % (self.max_size,))
                    write_all(fd, chunk)
                os.utime(fd, (internaldate, internaldate))
                os.fsync(fd)
            finally:
                os.close(fd)
        except TooLarge:
            discard(staged)
            self._record(source, folder, validity, position)
            raise
        except BaseException:
            discard(staged)
            raise
        fsync_directory(self.staging)
        text = stored_flags(flags)
        with database.transaction(self.db):
            self.db.execute("INSERT INTO arriving VALUES (?, ?, ?)", (target, filename, text))
            self._record(source, folder, validity, position)
        publish(staged, os.path.join(index.folder_dir(self.root, target), "new", filename))
        return size

    def _record(self, source, folder, validity, position):
        self.db.execute("INSERT OR REPLACE INTO imported VALUES (?, ?, ?, ?)", (source, folder, str(validity), position))
