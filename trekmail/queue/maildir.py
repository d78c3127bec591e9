"""
Local delivery into a mailbox's Maildir (layout in L{trekmail.mailstore}).

The message is written under C{tmp/}, fsynced, renamed into C{new/}, and
C{new/} is fsynced (once per batch of deliveries), so the IMAP server never sees a partial message and a
crash after delivery was reported cannot lose it: the queue removes its
copy only after this returns.
"""

import os

from twisted.internet.defer import DeferredList

from trekmail.mailstore import folder_path, maildir_path, unique_name
from trekmail.durable import fsync_directory, publish_batch, write_file
from trekmail.groupcommit import GroupCommit
from trekmail.queue.maildirclaim import create_freely


def ensure_maildir(root):
    """Create C{root} with C{tmp/ new/ cur/} if missing, durably."""
    if os.path.isdir(os.path.join(root, "new")):
        return
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
    fsync_directory(root)
    fsync_directory(os.path.dirname(root))


def _write_copy(data_dir, name, claim, address, sender, message, folder="INBOX"):
    """
    Write and fsync one copy under C{folder}'s C{tmp/}, with C{Return-Path}
    and C{Delivered-To} added; returns its C{(temporary, final)} paths.
    A missing Maildir is created through C{claim}
    (L{trekmail.queue.maildirclaim}); a folder other than INBOX is made
    when missing: the IMAP index names it (with its special use) at the
    next login.
    """
    root = maildir_path(data_dir, address)
    if not os.path.isdir(os.path.join(root, "new")):
        claim(address, lambda: ensure_maildir(root))
    root = folder_path(root, folder)
    ensure_maildir(root)
    temporary = os.path.join(root, "tmp", name)
    header = b"Return-Path: <%s>\r\nDelivered-To: %s\r\n" % (
        sender.encode("utf-8"),
        address.encode("utf-8"),
    )
    write_file(temporary, header, message)
    return temporary, os.path.join(root, "new", name)


def deliver_batch(data_dir, hostname, items, clock, syncers=None, claim=create_freely):
    """
    Runs on the writer thread: one copy per C{(address, sender, message, folder)},
    named by the time C{clock} (the wiring's C{reactor.seconds}) gives,
    written and fsynced in parallel with C{syncers}, moved into C{new/},
    and each C{new/} directory fsynced once for the whole batch.  Returns
    C{None} or the C{OSError} per item.  The names are chosen in the
    items' order before any is written: the IMAP index gives UIDs in name
    order (L{trekmail.imap.index.arrival_order}), and copies written in
    parallel would otherwise be named in whichever order the threads ran.
    """
    named = [(unique_name(clock(), hostname), item) for item in items]

    def write(job):
        name, item = job
        try:
            return _write_copy(data_dir, name, claim, *item)
        except (OSError, ValueError) as e:
            return e

    if syncers is not None and len(items) > 1:
        written = list(syncers.map(write, named))
    else:
        written = [write(job) for job in named]
    results = [e if isinstance(e, Exception) else None for e in written]
    moves = [(i, paths) for i, paths in enumerate(written) if not isinstance(paths, Exception)]
    for (index, _), error in zip(moves, publish_batch([paths for _, paths in moves])):
        results[index] = error
    return results


class MaildirWriter:
    """
    Local delivery with group commit (L{trekmail.groupcommit}):
    copies delivered at the same time share the fsync of their C{new/}
    directories.
    """

    def __init__(self, data_dir, hostname, reactor, *, syncers=None, writer=None, claim=create_freely):
        self.claim = claim
        self._commit = GroupCommit(
            reactor,
            lambda items: deliver_batch(data_dir, hostname, items, reactor.seconds, syncers, claim),
            "trekmail-maildir",
            writer,
        )

    def start(self):
        self._commit.start()

    def stop(self):
        self._commit.stop()

    def deliver(self, sender, message, addresses, folder="INBOX"):
        """Deferred firing with C{{address: None or the OSError}}; C{folder} is C{INBOX} or one such as C{Junk}."""
        waits = [self._commit.submit((address, sender, message, folder)) for address in addresses]

        def collected(results):
            return {
                address: None if ok else value.value
                for address, (ok, value) in zip(addresses, results)
            }

        return DeferredList(waits, consumeErrors=True).addCallback(collected)
