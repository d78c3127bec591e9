"""
The local sqlite database: schema upgrades, and a single worker thread.

sqlite allows one writer at a time anyway, so one thread that owns the
connection serialises every statement without locks of ours, keeps the
reactor thread free, and makes read-check-write sequences (counters,
caps) atomic simply by running them as one call.
"""

import os
import sqlite3
from dataclasses import dataclass, fields


from trekmail.groupcommit import GroupCommit, each
from trekmail.workerthreads import WorkerThreads


@dataclass(frozen=True)
class Schema:
    """
    One component's tables: C{migrations[i]} upgrades that component from
    version C{i} to C{i + 1}.  Components upgrade independently so that
    each package can own its tables.
    """

    component: str
    migrations: tuple


def from_row(cls, row):
    """A dataclass whose fields are columns of C{row}, by name."""
    return cls(**{f.name: row[f.name] for f in fields(cls)})


def connect(path):
    """
    Open the database, creating it readable by the server's user only: it
    holds password hashes.  sqlite gives the WAL files the same mode.
    """
    if path != ":memory:":
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def upgrade(db, schemas):
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions"
        " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    for schema in schemas:
        row = db.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (schema.component,)
        ).fetchone()
        current = row[0] if row else 0
        for version in range(current, len(schema.migrations)):
            with transaction(db):
                for statement in _statements(schema.migrations[version]):
                    db.execute(statement)
                db.execute(
                    "INSERT OR REPLACE INTO schema_versions VALUES (?, ?)",
                    (schema.component, version + 1),
                )


def _statements(script):
    return [s.strip() for s in script.split(";") if s.strip()]


class transaction:
    """C{with transaction(db):} runs the block as one IMMEDIATE transaction."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False


class ThreadedDatabase:
    """
    Runs C{function(db, *args)} on the database's own thread and returns a
    Deferred; the only way server code touches sqlite.

    Calls made while the thread is busy go over together as one batch
    (L{GroupCommit}), still one after another and each on its own: under
    load a submission costs a queue append instead of a thread hand-off.
    """

    def __init__(self, db, reactor):
        self.db = db
        self._pool = WorkerThreads(reactor, 1, "trekmail-sqlite")
        self._calls = GroupCommit(reactor, each(self._call), "trekmail-sqlite", writer=self._pool)

    def start(self):
        self._pool.start()

    def stop(self):
        self._pool.stop()
        self._calls.run_pending()
        self.db.close()

    def run(self, function, *args, **kwargs):
        return self._calls.submit((function, args, kwargs))

    def _call(self, call):
        function, args, kwargs = call
        return function(self.db, *args, **kwargs)
