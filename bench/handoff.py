"""
What a trip to a worker thread costs the IMAP server, against the work it
carries: CPU per call (user + system, every thread of this process) for

- a trivial call through Twisted's C{ThreadPool} with C{deferToThreadPool}
  (the peer) and through L{trekmail.workerthreads.WorkerThreads}, one call
  in flight and eight;
- one APPEND's, one STORE's and one EXPUNGE's index writes on a real
  index (insert, flag change, delete), on the reactor thread and on a
  worker thread.

    .venv/bin/python bench/handoff.py [--calls 20000]

Runs in one process on the real reactor and prints one table.
"""

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.threads import deferToThreadPool  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

import benchlib as b  # noqa: E402
from trekmail.imap import index  # noqa: E402
from trekmail.workerthreads import WorkerThreads  # noqa: E402


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@defer.inlineCallbacks
def measure(run, calls, in_flight, work, *args):
    """(CPU us, wall us) per call of C{run(work, *args)}, C{in_flight} at a time."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    for _ in range(calls // in_flight):
        yield defer.gatherResults([run(work, *args) for _ in range(in_flight)])
    done = calls // in_flight * in_flight
    return (cpu_seconds() - cpu) / done * 1e6, (time.perf_counter() - wall) / done * 1e6


@defer.inlineCallbacks
def main(o, rows):
    pool = ThreadPool(1, 1, name="bench-threadpool")
    workers = WorkerThreads(reactor, 1, "bench-workers")
    pool.start()
    workers.start()
    root = tempfile.mkdtemp(prefix="trekmail-bench-handoff-")
    db = index.open_index(root, time.time())
    uid = [0]

    def index_writes():
        uid[0] += 1
        n = uid[0]
        index.insert_rows(db, "INBOX", [(n, "f%d" % n, "", n, 10240, 0, b"s" * 300)], n + 1, n)
        index.update_flags_many(db, [("INBOX", [(n, "\\Deleted", n + 1)], n + 1)])
        index.delete_rows(db, root, "INBOX", [(n, "f%d" % n)], n + 2)

    threadpool = lambda function, *args: deferToThreadPool(reactor, pool, function, *args)  # noqa: E731
    inline = lambda function, *args: defer.execute(function, *args)  # noqa: E731
    try:
        for in_flight in (1, 8):
            for name, run in (("Twisted ThreadPool + deferToThreadPool", threadpool),
                              ("WorkerThreads", workers.run)):
                figures = yield measure(run, o.calls, in_flight, abs, -1)
                rows.append(["trivial call, %d in flight" % in_flight, name] + ["%.1f" % f for f in figures])
        for name, run in (("on a worker thread (WorkerThreads)", workers.run), ("on the reactor thread", inline)):
            figures = yield measure(run, o.calls // 4, 1, index_writes)
            rows.append(["index: insert + flag change + delete", name] + ["%.1f" % f for f in figures])
    finally:
        db.close()
        shutil.rmtree(root, True)
        pool.stop()
        workers.stop()
        reactor.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    options = parser.parse_args()
    results = []
    reactor.callWhenRunning(main, options, results)
    reactor.run()
    b.table("a trip to a worker thread, against the work it carries", ["what", "how", "CPU us/call", "wall us/call"],
            results)
