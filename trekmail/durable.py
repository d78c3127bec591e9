"""
Writing files so that they survive a crash: the few system-call sequences
every durable writer here (spool, Maildir, IMAP APPEND, keys,
certificates) shares.

The sequence is always the same: create the file under a temporary name
with its final mode, write it, fsync it (L{write_file}); rename it into
place and fsync the directory (L{publish}).  A writer that commits many
files at once (the spool, local delivery) renames them all and fsyncs each
directory once (L{publish_batch}): the one fsync of a directory is what
makes a batch cheap.
"""

import os


def fsync_directory(path):
    """Make the entries of C{path} (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_if_there(*paths, ignoring=FileNotFoundError):
    """Unlink each of C{paths}; one already gone is what was wanted."""
    for path in paths:
        try:
            os.unlink(path)
        except ignoring:
            pass


def discard(*paths):
    """Unlink each of C{paths} while cleaning up after a failure: a further error would hide the first."""
    remove_if_there(*paths, ignoring=OSError)


def write_all(fd, *chunks):
    """C{os.write} may write less than asked; loop until every byte is out."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def write_file(path, *chunks, mode=0o600, replace=False, fd=None, mtime=None):
    """
    Write C{chunks} to C{path} and fsync it.  The file is created with
    C{mode} before any byte is written (a key is never readable by
    others, even briefly), and must not exist yet unless C{replace}.
    C{fd}, when given, is C{path} already open for writing (a reused
    file) instead.  C{mtime} is set before the fsync, so it is as durable
    as the bytes.  A file this call created is removed again if writing
    fails, and the error raised.
    """
    created = fd is None
    if created:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if replace else os.O_EXCL)
        fd = os.open(path, flags, mode)
    try:
        try:
            write_all(fd, *chunks)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if created:
            discard(path)
        raise


def publish(temporary, final):
    """Rename a written file into place, and make the rename durable."""
    os.replace(temporary, final)
    fsync_directory(os.path.dirname(final) or ".")


def publish_batch(moves):
    """
    L{publish} for many C{(temporary, final)} files at once: every rename,
    then one fsync per directory.  Returns C{None} or the C{OSError} per
    move: a failed rename is its own (its temporary removed), a failed
    directory fsync every move into that directory.
    """
    results = []
    directories = {}
    for temporary, final in moves:
        try:
            os.replace(temporary, final)
        except OSError as e:
            discard(temporary)
            results.append(e)
            continue
        directories.setdefault(os.path.dirname(final) or ".", []).append(len(results))
        results.append(None)
    for directory, indexes in directories.items():
        try:
            fsync_directory(directory)
        except OSError as e:
            for index in indexes:
                results[index] = e
    return results


def replace_private(path, data, mode=0o600):
    """
    Atomically replace C{path} with C{data}, created with C{mode}: written
    under a temporary name and published (L{write_file}, L{publish}).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = path + ".tmp"
    write_file(temporary, data, mode=mode, replace=True)
    publish(temporary, path)
