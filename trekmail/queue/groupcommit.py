"""
Group commit: many writers share one round of fsyncs.

Each C{submit} only queues its item.  A single writer thread takes
everything queued so far and hands it to C{write_batch} in one call;
items that arrive meanwhile form the next batch.  Under load a batch
grows to whatever arrived during the previous fsync round, so concurrent
sessions do not queue behind each other's fsyncs, and when idle a lone
item goes out at once.  Used by the spool (before the C{250}) and by
local Maildir delivery.
"""

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

log = Logger()


class GroupCommit:
    """
    @param write_batch: C{write_batch(items)} runs on the writer thread and
        returns one result per item: C{None} for success, or an exception.
    """

    def __init__(self, reactor, write_batch, name, writer=None):
        self._reactor = reactor
        self._write_batch = write_batch
        self._writer = writer or ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._pending = []
        self._writing = False

    def start(self):
        self._writer.start()

    def stop(self):
        self._writer.stop()

    def submit(self, item):
        """Deferred firing with C{None} once C{item} is written, or failing with its exception."""
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
        d = deferToThreadPool(self._reactor, self._writer, self._write_batch, [item for item, _ in batch])
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _written(self, results, batch):
        self._write_next()
        for (_, d), error in zip(batch, results):
            if error is None:
                d.callback(None)
            else:
                d.errback(Failure(error))

    def _failed(self, failure, batch):
        self._write_next()
        log.failure("group commit writer failed", failure)
        for _, d in batch:
            d.errback(failure)
