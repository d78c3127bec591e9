"""
Worker threads for blocking calls that the reactor waits on many times a
second: the IMAP mail store's index and file work.

This replaces C{twisted.python.threadpool.ThreadPool} with
C{deferToThreadPool} there.  Under imaptest, py-spy put about a ninth of
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
    thread, calls also run one after another in that order.
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

    def run(self, function, *args):
        """Deferred firing, on the reactor thread, with C{function(*args)} as run on a worker."""
        d = Deferred()
        self._calls.put((d, function, args))
        return d

    def _work(self):
        while True:
            call = self._calls.get()
            if call is _STOP:
                return
            d, function, args = call
            try:
                outcome = (d, True, function(*args))
            except BaseException:
                outcome = (d, False, Failure())
            with self._lock:
                self._done.append(outcome)
                wake = not self._wake_pending
                self._wake_pending = True
            if wake:
                self._reactor.callFromThread(self._deliver)
            del call, d, function, args, outcome

    def _deliver(self):
        with self._lock:
            done, self._done = self._done, []
            self._wake_pending = False
        for d, succeeded, value in done:
            if succeeded:
                d.callback(value)
            else:
                d.errback(value)
