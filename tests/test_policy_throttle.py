from twisted.internet.task import Clock
from twisted.trial import unittest

from trekmail.policy.throttle import AuthThrottle


class ThrottleTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.throttle = AuthThrottle(free=2, base_delay=1.0, max_delay=4.0, disconnect_after=6, window=900)

    def fail(self, address="192.0.2.1"):
        verdict = self.throttle.attempted(address, self.clock.seconds())
        self.throttle.failed(address, self.clock.seconds())
        return verdict

    def test_growing_delay_then_disconnect(self):
        verdicts = [self.fail() for _ in range(7)]
        self.assertEqual([v.delay for v in verdicts], [0, 0, 1, 2, 4, 4, 4])
        self.assertEqual([v.disconnect for v in verdicts], [False] * 5 + [True, True])
        self.assertTrue(self.throttle.blocked("192.0.2.1", self.clock.seconds()))

    def test_other_addresses_unaffected(self):
        for _ in range(6):
            self.fail()
        self.assertFalse(self.throttle.blocked("192.0.2.2", self.clock.seconds()))
        self.assertEqual(self.fail("192.0.2.2").delay, 0)

    def test_window(self):
        for _ in range(6):
            self.fail()
        self.clock.advance(899)
        self.assertTrue(self.throttle.blocked("192.0.2.1", self.clock.seconds()))
        self.clock.advance(1)
        self.assertFalse(self.throttle.blocked("192.0.2.1", self.clock.seconds()))
        self.assertEqual(self.fail().delay, 0)

    def test_attempts_under_way_delay_but_do_not_block(self):
        """Twenty logins at once from one address (a NAT, a webmail) are not refused for being at once."""
        now = self.clock.seconds()
        verdicts = [self.throttle.attempted("192.0.2.1", now) for _ in range(20)]
        self.assertFalse(self.throttle.blocked("192.0.2.1", now))
        self.assertEqual([v.delay for v in verdicts[:4]], [0, 0, 1, 2], "guesses sent together wait as if in turn")
        for _ in range(20):
            self.throttle.succeeded("192.0.2.1", now)
        self.assertFalse(self.throttle.blocked("192.0.2.1", now))
        self.assertEqual(self.fail().delay, 0, "the successes left nothing behind")
        for _ in range(5):
            self.fail()
        self.assertTrue(self.throttle.blocked("192.0.2.1", now))

    def test_bounded_memory(self):
        throttle = AuthThrottle(max_tracked=10)
        for i in range(100):
            throttle.attempted("10.0.0.%d" % i, 0)
        self.assertEqual(len(throttle._records), 10)
