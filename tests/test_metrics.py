"""
The Prometheus metrics (trekmail.metrics): counters fed by the mail log's
events, the collector read at scrape time, the exposition resource, the
refusal events that feed the refusal counter (SMTP replies and the
connection caps), and the sample alert rules.
"""

import os
from collections import Counter

import yaml
from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogPublisher, eventAsJSON, eventFromJSON
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from tests.smtp_site import Site, send
from tests.support import REPO, capture
from trekmail import maillog
from trekmail.connlimit import HTTP_REFUSAL, SMTP_REFUSAL, CappedFactory, ConnectionCaps, refusal_code
from trekmail.dav.site import CountingSite
from trekmail.metrics.endpoint import Exposition, MetricsService
from trekmail.metrics.events import MailLogMetrics
from trekmail.metrics.gauges import ServerCollector, age_bucket
from trekmail.policy import gate
from trekmail.smtp.mx import MXFactory
from trekmail.smtp.replies import refuse



class EventTests(unittest.TestCase):
    def setUp(self):
        self.registry = CollectorRegistry()
        self.log = Logger(observer=MailLogMetrics(self.registry))

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels) or 0

    def test_each_kind_moves_its_counter(self):
        maillog.emit(self.log, maillog.ACCEPTED, queue_id="Q1", listener="submission")
        maillog.emit(self.log, maillog.ACCEPTED, queue_id="Q2", listener="mx")
        maillog.emit(self.log, maillog.DELIVERY, queue_id="Q1", route="managed", outcome="deferred", delay=42.0)
        maillog.emit(self.log, maillog.DELIVERY, queue_id="Q2", route="local", outcome="delivered", delay=0.5)
        maillog.emit(self.log, maillog.LOCAL_DELIVERY, queue_id="Q2", mailbox="b@x", folder="INBOX")
        maillog.emit(self.log, maillog.REPORT, queue_id="Q1", kind="failure", report_id="Q3")
        maillog.emit(self.log, maillog.LOGIN, protocol="imap", client_address="192.0.2.1", mailbox="a@x",
                     outcome="failed")
        maillog.emit(self.log, maillog.REFUSED, protocol="smtp", listener="mx", client_address="192.0.2.1",
                     code="550 5.7.1", reason="relay")
        self.assertEqual(self.value("trekmail_messages_accepted_total", listener="submission"), 1)
        self.assertEqual(self.value("trekmail_messages_accepted_total", listener="mx"), 1)
        self.assertEqual(self.value("trekmail_deliveries_total", outcome="deferred", route="managed"), 1)
        self.assertEqual(self.value("trekmail_deliveries_total", outcome="delivered", route="local"), 1)
        self.assertEqual(self.value("trekmail_delivery_delay_seconds_bucket", outcome="delivered", le="1.0"), 1)
        self.assertEqual(self.value("trekmail_delivery_delay_seconds_bucket", outcome="deferred", le="30.0"), 0)
        self.assertEqual(self.value("trekmail_delivery_delay_seconds_sum", outcome="deferred"), 42.0)
        self.assertEqual(self.value("trekmail_local_deliveries_total"), 1)
        self.assertEqual(self.value("trekmail_reports_total", kind="failure"), 1)
        self.assertEqual(self.value("trekmail_logins_total", protocol="imap", outcome="failed"), 1)
        self.assertEqual(self.value("trekmail_refusals_total", protocol="smtp", listener="mx", reason="relay",
                                    code="550 5.7.1"), 1)

    def test_other_events_and_odd_values_add_no_series(self):
        self.log.info("queue recovered {count} messages", count=3)
        maillog.emit(self.log, maillog.LOGIN, protocol="imap\r\nx{}" * 10, outcome=None, mailbox="a")
        maillog.emit(self.log, maillog.DELIVERY, queue_id="Q", route="managed", outcome="bounced", delay=None)
        self.assertEqual(self.value("trekmail_logins_total", protocol="other", outcome="none"), 1)
        self.assertEqual(self.value("trekmail_deliveries_total", outcome="bounced", route="managed"), 1)
        self.assertEqual(self.value("trekmail_delivery_delay_seconds_count", outcome="bounced"), 0)

    def test_events_of_another_process_count(self):
        """The other IMAP processes' events arrive as JSON, then published: plain fields, as here."""
        sent = []
        maillog.emit(Logger(observer=sent.append), maillog.LOGIN, protocol="imap", client_address="192.0.2.1",
                     mailbox="a@x", outcome="ok")
        self.log.observer(eventFromJSON(eventAsJSON(sent[0])))
        self.assertEqual(self.value("trekmail_logins_total", protocol="imap", outcome="ok"), 1)


class FakeCensus:
    def __init__(self, held):
        self.held = held

    def census(self):
        return iter(self.held)


class FakeLimits:
    def __init__(self, held):
        self._held = held

    def held(self):
        return self._held


class FakeCoordinator:
    index = 0

    def __init__(self):
        self.limits = FakeLimits(3)
        self.loads = {1: 5, 2: 0}


class FakeSolo:
    index = 0
    limits = FakeLimits(7)


class FakeCapped:
    def __init__(self, open):
        self.open = open


class CollectorTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000000)
        self.registry = CollectorRegistry()

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels)

    def test_queue_by_state_and_age(self):
        now = self.clock.seconds()
        queue = FakeCensus([("new", now - 10), ("deferred", now - 4000), ("deferred", now - 90000),
                            ("active", now - 10 * 86400)])
        self.registry.register(ServerCollector(self.clock, queue=queue))
        self.assertEqual([self.value("trekmail_queue_messages", state=s) for s in ("new", "deferred", "active")],
                         [1, 2, 1])
        self.assertEqual([self.value("trekmail_queue_messages_by_age", age=a) for a in ("5m", "1h", "6h", "1d", "5d",
                                                                                          "older")],
                         [1, 0, 1, 0, 1, 1])
        self.assertEqual(self.value("trekmail_queue_oldest_seconds"), 10 * 86400)
        queue.held = []
        self.assertEqual(self.value("trekmail_queue_messages", state="deferred"), 0)
        self.assertEqual(self.value("trekmail_queue_oldest_seconds"), 0)

    def test_age_buckets(self):
        self.assertEqual([age_bucket(a) for a in (0, 299, 300, 3599, 86400, 5 * 86400)],
                         ["5m", "5m", "1h", "1h", "5d", "older"])

    def test_connections_imap_processes_and_dav(self):
        dav = CountingSite(None)
        dav.requests.update({"PROPFIND": 4, "GET": 1})
        self.registry.register(ServerCollector(self.clock, listeners={"mx": FakeCapped(2), "https": FakeCapped(0)},
                                               imap=FakeCoordinator(), dav=dav))
        self.assertEqual(self.value("trekmail_connections_open", listener="mx"), 2)
        self.assertEqual(self.value("trekmail_connections_open", listener="https"), 0)
        self.assertEqual([self.value("trekmail_imap_connections", process=p) for p in "012"], [3, 5, 0])
        self.assertEqual(self.value("trekmail_dav_requests_total", method="PROPFIND"), 4)
        self.assertIsNone(self.value("trekmail_queue_messages", state="new"))

    def test_a_single_imap_process(self):
        solo = FakeSolo()
        self.registry.register(ServerCollector(self.clock, imap=solo))
        self.assertEqual(self.value("trekmail_imap_connections", process="0"), 7)
        self.assertIsNone(self.value("trekmail_imap_connections", process="1"))


class DavCountTests(unittest.TestCase):
    def test_requests_counted_by_method_unknown_ones_as_other(self):
        site = CountingSite(Resource())
        for method in (b"PROPFIND", b"PROPFIND", b"REPORT", b"BREW", b"X" * 1000):
            request = DummyRequest([b""])
            request.method = method
            site.getResourceFor(request)
        self.assertEqual(site.requests, Counter({"PROPFIND": 2, "REPORT": 1, "OTHER": 2}))


class ExpositionTests(unittest.TestCase):
    def test_text_format(self):
        clock = Clock()
        publisher = LogPublisher()
        metrics = MetricsService(clock, publisher=publisher, queue=FakeCensus([("new", 0)]))
        log = Logger(observer=publisher)
        maillog.emit(log, maillog.ACCEPTED, listener="mx")
        metrics.startService()
        maillog.emit(log, maillog.ACCEPTED, listener="mx")
        metrics.stopService()
        maillog.emit(log, maillog.ACCEPTED, listener="mx")
        request = DummyRequest([b""])
        body = Exposition(metrics.registry).render_GET(request)
        self.assertTrue(request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        text = body.decode("ascii")
        self.assertIn('trekmail_messages_accepted_total{listener="mx"} 1.0\n', text)
        self.assertIn('trekmail_queue_messages{state="new"} 1.0\n', text)
        self.assertIn("# TYPE trekmail_delivery_delay_seconds histogram\n", text)


class RefusalEventTests(unittest.TestCase):
    def test_policy_denial_carries_its_kind(self):
        reply = refuse(gate.Denial(gate.PAUSED, "account paused"))
        self.assertEqual((reply.code, reply.status, reply.reason), (554, "5.7.7", "paused"))

    def test_mx_refusals_are_logged_with_code_and_reason(self):
        seen = capture(self)
        server = MXFactory(
            directory=FakeDirectory(["example.com"], ["bob@example.com"]),
            queue=FakeQueue(),
            clock=Clock(),
            hostname="mx.test",
            tls_options=object(),
        ).buildProtocol(None)
        transport = TLSStringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"EHLO remote.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@elsewhere.test>\r\n"
                            b"RCPT TO:<nobody@example.com>\r\nRCPT TO:<bob%x@example.com>\r\nRCPT TO:<bob@example.com>"
                            b"\r\nNOOP\r\nRCPT TO:bad\r\n")
        self.assertEqual([r[:9] for r in replies(transport)[-6:]],
                         ["550 5.7.1", "550 5.1.1", "550 5.7.1", "250 2.1.5", "250 2.0.0", "501 5.5.4"])
        refused = [(e["protocol"], e["listener"], e["code"], e["reason"]) for e in seen
                   if e["log_trekmail"] == maillog.REFUSED]
        self.assertEqual(refused, [("smtp", "mx", "550 5.7.1", "relay"), ("smtp", "mx", "550 5.1.1", "unknown-user"),
                                   ("smtp", "mx", "550 5.7.1", "recipient")])

    def test_connection_past_the_cap_is_logged_and_open_counted(self):
        seen = capture(self)
        factory = CappedFactory(Factory.forProtocol(Protocol), ConnectionCaps(10, 1), SMTP_REFUSAL, clock=Clock(),
                                listener="mx", protocol="smtp")
        address = IPv4Address("TCP", "192.0.2.1", 40000)
        held = factory.buildProtocol(address)
        held.makeConnection(StringTransport())
        self.assertEqual(factory.open, 1)
        factory.buildProtocol(address).makeConnection(StringTransport())
        self.assertEqual(factory.open, 1)
        self.assertEqual([(e["protocol"], e["listener"], e["client_address"], e["code"], e["reason"]) for e in seen],
                         [("smtp", "mx", "192.0.2.1", "421 4.7.0", "connections")])
        held.connectionLost(None)
        self.assertEqual(factory.open, 0)

    def test_refusal_codes(self):
        self.assertEqual([refusal_code(r) for r in (SMTP_REFUSAL, HTTP_REFUSAL, b"")], ["421 4.7.0", "503", None])


class AlertRulesTests(unittest.TestCase):
    def test_sample_rules_are_well_formed(self):
        with open(os.path.join(REPO, "etc", "prometheus-alerts.yml"), encoding="utf-8") as f:
            rules = yaml.safe_load(f)
        groups = rules["groups"]
        self.assertTrue(groups)
        names = set()
        for group in groups:
            self.assertIsInstance(group["name"], str)
            for rule in group["rules"]:
                self.assertEqual(set(rule) - {"alert", "expr", "for", "labels", "annotations"}, set(), rule)
                self.assertIsInstance(rule["expr"], str)
                self.assertIn(rule["labels"]["severity"], ("warning", "critical"))
                self.assertTrue(rule["annotations"]["summary"])
                names.add(rule["alert"])
        self.assertTrue({"TrekMailQueueGrowing", "TrekMailDeliveriesFailing", "TrekMailDeferredRateHigh",
                         "TrekMailLoginFailuresSpike", "TrekMailSourceAddressListed"} <= names)


class SubmissionRefusalTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_hourly_cap_is_a_refused_event(self):
        seen = capture(self)
        site = Site(self)
        site.account(trial=True)

        def run():
            client = site.connect("submissions", login="alice@example.com")
            try:
                return [send(client, "alice@example.com")[-1][0] for _ in range(16)]
            finally:
                client.close()

        self.assertEqual((yield site.in_thread(run)), [250] * 15 + [421])
        self.assertEqual([(e["protocol"], e["listener"], e["code"], e["reason"]) for e in seen
                          if e["log_trekmail"] == maillog.REFUSED],
                         [("smtp", "submissions", "421 4.7.0", "hourly")])
        self.assertEqual(len([e for e in seen if e["log_trekmail"] == maillog.ACCEPTED
                              and e["listener"] == "submissions"]), 15)
