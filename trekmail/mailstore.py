"""
Where each mailbox's mail lives on disk, agreed between delivery (which
writes new mail) and the IMAP server (which reads and indexes it).

Layout: C{DATA_DIR/mail/DOMAIN/LOCAL/} is a Maildir (C{tmp/ new/ cur/})
holding INBOX; other folders are Maildir++ subfolders (C{.Sent/},
C{.Drafts/}, ...) beneath it.  The same mailbox's DAV data is under
C{DATA_DIR/dav/collections/collection-root/ADDRESS/}; a deleted
mailbox's data waits under C{DATA_DIR/deleted/} (L{trekmail.realm.retention}).
"""

import itertools
import os
import socket

_counter = itertools.count()
_pid = os.getpid()
_hostname = socket.gethostname()


def _forked():
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def mailbox_address_problem(address):
    """
    Why C{address} cannot have a Maildir of its own under C{mail/DOMAIN/LOCAL},
    or C{None}.  Delivery refuses such an address, so C{mailbox add} asks
    the same question before it creates the mailbox.
    """
    local, _, domain = address.lower().rpartition("@")
    if not local or not domain:
        return "it has no local part or no domain"
    if "/" in address or "\0" in address:
        return "a mailbox's name cannot contain '/' or NUL (each part of the address names a directory)"
    if local.startswith(".") or domain.startswith("."):
        return "a mailbox's local part and domain cannot start with '.'"
    return None


def maildir_path(data_dir, address):
    problem = mailbox_address_problem(address)
    if problem:
        raise ValueError("not a mailbox address: %r: %s" % (address, problem))
    local, _, domain = address.lower().rpartition("@")
    return os.path.join(data_dir, "mail", domain, local)


def folder_path(root, name):
    """The Maildir of folder C{name} in the mailbox at C{root}: C{root} itself for INBOX, C{root/.NAME} otherwise."""
    return root if name == "INBOX" else os.path.join(root, "." + name)


def dav_collections(data_dir):
    """Radicale's storage folder (L{trekmail.dav.site})."""
    return os.path.join(data_dir, "dav", "collections")


def dav_principal_path(data_dir, address):
    """A mailbox's calendars and address books: Radicale keeps each principal under C{collection-root/USER}."""
    maildir_path(data_dir, address)
    return os.path.join(dav_collections(data_dir), "collection-root", address.lower())


def unique_name(now, hostname=None):
    """
    A Maildir file name no other writer, here or on another host, can
    pick: C{now} (seconds since the epoch, from the caller's clock),
    process and a per-process counter (the Maildir spec's C{Q} form).  The process id and host name are read once: each is a
    system call, and an APPEND is a few dozen of them in all.  The
    microseconds are padded to six digits so that names sort as they
    were made (IMAP gives UIDs in that order).
    """
    seconds = int(now)
    return "%d.M%06dP%dQ%d.%s" % (seconds, int((now - seconds) * 1e6), _pid, next(_counter),
                                (hostname or _hostname).replace("/", "\\057").replace(":", "\\072"))
