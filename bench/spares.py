"""
What an APPEND's file costs when the EXPUNGEs around it delete files (what
Maildir servers do, Dovecot among them), against writing into the file of
an expunged message (L{trekmail.imap.spares}): messages/s and CPU per
message (user + system) for a steady churn of fsynced 10 KiB messages in
one folder, 1,000 of them live.

    .venv/bin/python bench/spares.py [--secs 15]

Both run the server's own calls (C{index.write_message} and
C{index.delete_rows}) on a real index in a directory under the system's
temporary directory, one after the other, and print one table.  The gap
depends on the file system: on ext4 without a journal, every inode
allocation scans past the inodes freed in the last 30 seconds.
"""

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as b  # noqa: E402
from trekmail.imap import index  # noqa: E402

LIVE = 1000


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def churn(secs, reuse):
    """(messages/s, CPU us per message) of APPEND + EXPUNGE file work for C{secs}."""
    root = tempfile.mkdtemp(prefix="trekmail-bench-spares-")
    db = index.open_index(root, time.time())
    data = os.urandom(10 * 1024)
    live, spare_paths = collections.deque(), []
    written = 0
    try:
        cpu, started = cpu_seconds(), time.monotonic()
        while time.monotonic() - started < secs:
            spare = spare_paths.pop() if spare_paths else None
            live.append(index.write_message(root, "INBOX", data, time.time(), time.time(), spare))
            written += 1
            if len(live) > LIVE:
                old = live.popleft()
                spare_paths += index.delete_rows(db, root, "INBOX", [(0, old)], written, {old},
                                                 {old} if reuse else set())
        elapsed, used = time.monotonic() - started, cpu_seconds() - cpu
    finally:
        db.close()
        shutil.rmtree(root, True)
    return written / elapsed, used / written * 1e6


def file_system():
    found = subprocess.run(["df", "--output=fstype", tempfile.gettempdir()], capture_output=True, text=True)
    return found.stdout.split()[-1] if found.returncode == 0 else "?"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secs", type=float, default=15)
    options = parser.parse_args()
    rows = []
    for name, reuse in (("new file per APPEND, deleted on EXPUNGE (peer: Maildir as Dovecot does it)", False),
                        ("written into an expunged message's file (TrekMail)", True)):
        rate, cpu = churn(options.secs, reuse)
        rows.append([name, b.fmt(rate), b.fmt(cpu)])
    b.table("APPEND file work under EXPUNGE churn, 10 KiB messages, fsync each (%s in %s)"
            % (file_system(), tempfile.gettempdir()), ["files", "messages/s", "CPU us/message"], rows)
