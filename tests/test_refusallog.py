"""
A client hammering a capped listener writes a few C{refused} lines per
minute, then one line with the count of those left out (the reactor's
clock, a task.Clock here); the metrics still count every refusal.
"""

from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEventAsClassicLogText
from twisted.trial import unittest

from tests.support import capture
from trekmail import refusallog
from trekmail.connlimit import SMTP_REFUSAL, CappedFactory, ConnectionCaps
from trekmail.metrics.events import MailLogMetrics


class HammeringTests(unittest.TestCase):
    def setUp(self):
        self.seen = capture(self)
        self.clock = Clock()
        self.factory = CappedFactory(Factory.forProtocol(Protocol), ConnectionCaps(10, 0), SMTP_REFUSAL,
                                     clock=self.clock, listener="mx", protocol="smtp")

    def hammer(self, count, host="192.0.2.1"):
        for _ in range(count):
            address = IPv4Address("TCP", host, 40000)
            self.factory.buildProtocol(address).makeConnection(StringTransport())

    def lines(self):
        texts = [formatEventAsClassicLogText(e, formatTime=lambda t: "-") for e in self.seen]
        return [t.split("] ", 1)[1].rstrip("\n") for t in texts if t]

    def test_a_few_lines_per_address_per_minute_then_one_summary(self):
        self.hammer(100)
        self.hammer(2, "192.0.2.2")
        refused = 'refused smtp mx [%s] "421 4.7.0" connections'
        self.assertEqual(self.lines(), [refused % "192.0.2.1"] * refusallog.LINES + [refused % "192.0.2.2"] * 2)
        self.clock.advance(refusallog.WINDOW)
        self.assertEqual(self.lines()[-1], refused % "192.0.2.1" + " suppressed=%d in=60s" % (100 - refusallog.LINES))
        self.assertEqual(len(self.lines()), refusallog.LINES + 3, "no summary for an address with nothing left out")
        self.hammer(1)
        self.assertEqual(self.lines()[-1], refused % "192.0.2.1", "a new minute logs again")

    def test_the_metrics_count_every_refusal(self):
        metrics = MailLogMetrics(CollectorRegistry())
        self.hammer(40)
        self.clock.advance(refusallog.WINDOW)
        for event in self.seen:
            metrics(event)
        self.assertEqual(metrics.refusals.labels("smtp", "mx", "connections", "421 4.7.0")._value.get(), 40)

    def test_stopping_the_listener_writes_the_summary_and_leaves_no_timer(self):
        self.factory.doStart()
        self.hammer(refusallog.LINES + 3)
        self.factory.doStop()
        self.assertIn("suppressed=3 ", self.lines()[-1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_addresses_followed_are_capped(self):
        self.patch(refusallog, "MAX_ADDRESSES", 2)
        for n in range(10):
            self.hammer(refusallog.LINES + 1, "192.0.2.%d" % (n,))
        self.assertEqual(len(self.factory.refusals.windows), 3)
        self.clock.advance(refusallog.WINDOW)
        self.assertIn("[-] \"421 4.7.0\" connections suppressed=%d " % (8 * (refusallog.LINES + 1) - refusallog.LINES,),
                      " ".join(self.lines()))
