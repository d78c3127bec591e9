"""
Writing files so that they survive a crash: the few system-call sequences
every durable writer here (spool, Maildir, keys, certificates) shares.
"""

import os


def fsync_directory(path):
    """Make the entries of C{path} (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_if_there(*paths):
    """Unlink each of C{paths}; one already gone is what was wanted."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def write_all(fd, *chunks):
    """C{os.write} may write less than asked; loop until every byte is out."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def replace_private(path, data, mode=0o600):
    """
    Atomically replace C{path} with C{data}: the file is created with
    C{mode} before any byte is written (a key is never readable by others,
    even briefly), fsynced, renamed over the old one, and the rename made
    durable.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(directory)
