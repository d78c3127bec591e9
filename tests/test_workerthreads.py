"""Worker threads: calls in order, results back on the reactor thread in batches, one wake-up for many."""

import threading

from twisted.trial import unittest

from trekmail.workerthreads import WorkerThreads


class HeldReactor:
    """Keeps what the workers hand to C{callFromThread}, for the test to run on its own thread."""

    def __init__(self):
        self.calls = []

    def callFromThread(self, function, *args):
        self.calls.append((function, args))

    def run_calls(self):
        calls, self.calls = self.calls, []
        for function, args in calls:
            function(*args)


class WorkerThreadsTests(unittest.TestCase):
    def setUp(self):
        self.reactor = HeldReactor()

    def workers(self, threads):
        workers = WorkerThreads(self.reactor, threads, "test")
        workers.start()
        return workers

    def test_results_in_order_and_failures_as_failures(self):
        workers = self.workers(1)
        ran = []
        results = [workers.run(ran.append, n) for n in range(3)]
        failed = workers.run(int, "not a number")
        workers.stop()
        self.assertEqual(ran, [0, 1, 2])
        self.reactor.run_calls()
        self.assertEqual([self.successResultOf(d) for d in results], [None, None, None])
        self.failureResultOf(failed, ValueError)

    def test_one_wake_up_carries_every_result_finished_since_the_last(self):
        workers = self.workers(1)
        gate = threading.Event()
        first = workers.run(gate.wait, 10)
        more = [workers.run(lambda n=n: n * 2, n) for n in range(5)]
        gate.set()
        workers.stop()
        self.assertEqual(len(self.reactor.calls), 1)
        self.assertNoResult(first)
        self.reactor.run_calls()
        self.assertTrue(self.successResultOf(first))
        self.assertEqual([self.successResultOf(d) for d in more], [0, 2, 4, 6, 8])
        self.reactor.run_calls()
        self.assertEqual(self.reactor.calls, [])

    def test_the_next_result_wakes_the_reactor_again(self):
        workers = self.workers(1)
        d = workers.run(lambda: "a")
        workers.stop()
        self.reactor.run_calls()
        self.assertEqual(self.successResultOf(d), "a")
        workers.start()
        later = workers.run(lambda: "b")
        workers.stop()
        self.assertEqual(len(self.reactor.calls), 1)
        self.reactor.run_calls()
        self.assertEqual(self.successResultOf(later), "b")

    def test_several_threads_run_calls_side_by_side(self):
        workers = self.workers(2)
        both = threading.Barrier(2, timeout=10)
        calls = [workers.run(both.wait) for _ in range(2)]
        workers.stop()
        self.reactor.run_calls()
        self.assertEqual(sorted(self.successResultOf(d) for d in calls), [0, 1])


class MapTests(unittest.TestCase):
    """C{map}, for a worker of another pool that fans out (the spool's and Maildir's fsyncs)."""

    def setUp(self):
        self.workers = WorkerThreads(HeldReactor(), 3, "test")
        self.workers.start()
        self.addCleanup(self.workers.stop)

    def test_results_in_order_side_by_side(self):
        all_three = threading.Barrier(3, timeout=10)
        self.assertEqual(self.workers.map(lambda n: (all_three.wait(), n * 2)[1], [1, 2, 3]), [2, 4, 6])

    def test_first_failure_is_raised_after_all_ran(self):
        ran = []

        def work(n):
            ran.append(n)
            if n % 2:
                raise ValueError(n)
            return n

        with self.assertRaises(ValueError) as caught:
            self.workers.map(work, [0, 1, 2, 3])
        self.assertEqual(caught.exception.args, (1,))
        self.assertEqual(sorted(ran), [0, 1, 2, 3])

    def test_nothing_to_do(self):
        self.assertEqual(self.workers.map(int, []), [])
