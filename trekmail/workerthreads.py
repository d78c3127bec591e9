"""
The one way off the reactor thread: every blocking call the server makes
(sqlite, the spool's and Maildir's files and fsyncs, DKIM signatures,
password hashes, LDAP, the IMAP mail store) runs on a L{WorkerThreads},
directly or batched by L{trekmail.groupcommit.GroupCommit}.  The one
exception is the DAV site: C{twisted.web.wsgi.WSGIResource} requires a
C{twisted.python.threadpool.ThreadPool}.

This replaces C{twisted.python.threadpool.ThreadPool} with
C{deferToThreadPool}.  Under imaptest, py-spy put about a ninth of
the IMAP server's CPU in that machinery rather than in the calls it
carried: the context tracking around every call, the team's coordination
of its workers through locks and a condition, the deprecation proxies
its waker reads on every wake-up, and a wake-up of the reactor (a write
to its pipe) for each result.  Here a call is a put on a
C{queue.SimpleQueue} (written in C), and results come back in batches:
one wake-up of the reactor carries every result finished since the last
one it took, so a busy process pays one wake-up for many calls.
"""

import queue
import threading

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_STOP = object()


class WorkerThreads:
    """
    C{threads} threads taking calls in the order they were made; with one
    thread, calls also run one after another in that order.  Calls made
    before L{start} wait for it.
    """

    def __init__(self, reactor, threads, name):
        self._reactor = reactor
        self._count = threads
        self._name = name
        self._calls = queue.SimpleQueue()
        self._threads = []
        self._lock = threading.Lock()
        self._done = []
        self._wake_pending = False

    def start(self):
        for number in range(self._count):
            thread = threading.Thread(target=self._work, name="%s-%d" % (self._name, number), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self):
        """Lets the calls already made finish, then ends the threads (their results are not delivered)."""
        for _ in self._threads:
            self._calls.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._threads = []

    @property
    def threads(self):
        return list(self._threads)

    def run(self, function, *args):
        """Deferred firing, on the reactor thread, with C{function(*args)} as run on a worker."""
        d = Deferred()
        self._calls.put((lambda succeeded, value: self._finished(d, succeeded, value), function, args))
        return d

    def map(self, function, items):
        """
        C{[function(item) for item in items]}, run side by side on these
        threads, for a caller on another worker thread (never the
        reactor's: this blocks until all are done), raising the first
        item's exception as C{concurrent.futures}' C{map} does.
        """
        results = [None] * len(items)
        remaining = [len(items)]
        lock = threading.Lock()
        done = threading.Event()

        def finished(index, succeeded, value):
            results[index] = (succeeded, value)
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                done.set()

        if not items:
            return []
        for index, item in enumerate(items):
            self._calls.put((lambda succeeded, value, index=index: finished(index, succeeded, value), function, (item,)))
        done.wait()
        for succeeded, value in results:
            if not succeeded:
                value.raiseException()
        return [value for _, value in results]

    def _work(self):
        while True:
            call = self._calls.get()
            if call is _STOP:
                return
            finished, function, args = call
            try:
                value, succeeded = function(*args), True
            except BaseException:
                value, succeeded = Failure(), False
            finished(succeeded, value)
            del call, finished, function, args, value

    def _finished(self, d, succeeded, value):
        """On the worker: queue C{d}'s outcome, waking the reactor only if no wake-up is pending already."""
        with self._lock:
            self._done.append((d, succeeded, value))
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self._reactor.callFromThread(self._deliver)

    def _deliver(self):
        with self._lock:
            done, self._done = self._done, []
            self._wake_pending = False
        for d, succeeded, value in done:
            if succeeded:
                d.callback(value)
            else:
                d.errback(value)
