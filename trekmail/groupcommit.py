"""
Group commit: many callers share one trip to a worker thread.

Each C{submit} only queues its item.  A single writer thread takes
everything queued so far and hands it to C{write_batch} in one call;
items that arrive meanwhile form the next batch.  Under load a batch
grows to whatever arrived during the previous round, so concurrent
sessions do not queue behind each other's fsyncs or thread hand-offs,
and when idle a lone item goes out at once.

The hand-off itself is what it saves: each trip to a thread and back
costs a wake-up on both sides and a fight for the GIL, which at a
thousand messages a second was a large share of the server's CPU.
Used by the spool (before the C{250}), local Maildir delivery, spool
removal and the realm's database thread.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from trekmail.workerthreads import WorkerThreads

log = Logger()


def each(function, errors=(Exception,)):
    """
    A C{write_batch} that calls C{function(item)} for every item in turn,
    an exception among C{errors} standing for that item's failure only.
    """

    def run(items):
        results = []
        for item in items:
            try:
                results.append(function(item))
            except errors as e:
                results.append(e)
        return results

    return run


class GroupCommit:
    """
    @param write_batch: C{write_batch(items)} runs on the writer thread and
        returns one result per item: an exception instance fails that
        item's Deferred, anything else is its result.
    @param writer: the L{WorkerThreads} to run batches on; by default one
        thread of its own, started and stopped with this object.  Batches never
        overlap, so a shared pool still sees one batch at a time.
    """

    def __init__(self, reactor, write_batch, name, writer=None):
        self._write_batch = write_batch
        self._owns_writer = writer is None
        self._writer = writer or WorkerThreads(reactor, 1, name)
        self._pending = []
        self._writing = False

    def start(self):
        if self._owns_writer:
            self._writer.start()

    def stop(self):
        if self._owns_writer:
            self._writer.stop()

    def run_pending(self):
        """
        Once the writer has stopped, do what still waited for it here, so
        that stopping loses no write submitted before it.
        """
        batch, self._pending = self._pending, []
        if batch:
            try:
                results = self._write_batch([item for item, _ in batch])
            except Exception:
                self._failed(Failure(), batch)
            else:
                self._written(results, batch)

    def submit(self, item):
        """Deferred firing with C{item}'s result once its batch is done."""
        d = Deferred()
        self._pending.append((item, d))
        if not self._writing:
            self._write_next()
        return d

    def _write_next(self):
        batch, self._pending = self._pending, []
        if not batch:
            self._writing = False
            return
        self._writing = True
        d = self._writer.run(self._write_batch, [item for item, _ in batch])
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _written(self, results, batch):
        self._write_next()
        for (_, d), result in zip(batch, results):
            if isinstance(result, BaseException):
                d.errback(Failure(result))
            else:
                d.callback(result)

    def _failed(self, failure, batch):
        self._write_next()
        log.failure("group commit writer failed", failure)
        for _, d in batch:
            d.errback(failure)
