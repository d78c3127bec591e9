"""
Files of expunged messages, kept for the next APPEND to write into.

Every APPEND creates a file and every EXPUNGE deletes one.  On ext4
without a journal (the benchmark machine), allocating an inode scans past
every inode freed in the last 30 seconds (the kernel's
C{recently_deleted}): under imaptest, perf put a sixth of the machine's
CPU there.  Rewriting a dead file instead skips both the free and the
allocation on any file system; C{bench/spares.py} measures the two.

A kept file waits in its folder's C{tmp/}, where Maildir readers expect
leftovers: a crash forgets the list (as does an account closing while a
move is under way), and folder loading deletes C{tmp/} files after 36
hours; a closing account deletes the rest.  A file that is still linked
elsewhere (COPY makes hard links) is never rewritten: L{reopen} checks,
on the thread that writes it.  COPY runs on another file thread and
links a parked file by its C{tmp/} name (a message another session still
numbers), so L{reopen} first renames the spare away from that name: a
link made before the rename shows in the link count, none can be made
after it.
"""

import os

from twisted.python.failure import Failure

LIMIT = 32
"""Spare files per account: enough for the APPENDs between two EXPUNGEs of a busy session."""
LARGEST = 1024 * 1024
"""Larger dead files are deleted: their blocks are worth freeing, and an allocation is small beside writing them."""


class SpareFiles:
    """
    One account's pool.  It lives on the reactor thread: files are
    offered before the index call that moves them to C{tmp/}, and become
    spares only once that call has succeeded.
    """

    def __init__(self, limit=LIMIT):
        self.limit = limit
        self._paths = []
        self._promised = 0

    def offer(self, candidates, move):
        """
        C{candidates}: C{(filename, size)} of files about to be dead.
        Calls C{move(keep)} with the names to keep (it moves them to
        C{tmp/} rather than deleting them, and its Deferred fires with
        their new paths); their places are held until it has fired.
        Returns C{move}'s Deferred, firing with C{None}.
        """
        room = self.limit - len(self._paths) - self._promised
        keep = set([name for name, size in candidates if size <= LARGEST][:max(room, 0)])
        self._promised += len(keep)

        def moved(paths):
            self._promised -= len(keep)
            if not isinstance(paths, Failure):
                self._paths.extend(paths)
                return None
            return paths
        return move(keep).addBoth(moved)

    def take(self):
        """A spare file's path, or C{None}: the caller owns it from now on."""
        return self._paths.pop() if self._paths else None

    def drain(self):
        paths, self._paths = self._paths, []
        return paths


def reopen(path, private):
    """
    A spare file renamed to C{private} (a fresh name in a C{tmp/} of the
    same account), opened for writing and emptied; or C{None} if it is
    gone or still linked from a folder (its name is then dropped: the
    other link keeps the message).
    """
    try:
        os.rename(path, private)
    except FileNotFoundError:
        return None
    fd = os.open(private, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_nlink == 1:
            os.ftruncate(fd, 0)
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    os.unlink(private)
    return None
