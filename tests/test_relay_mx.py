"""
MX resolution (which hosts, in which order, and which DNS failures defer
or bounce) and the choice of source address pool.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.names import dns, error
from twisted.trial import unittest

from tests.delivery_support import Zone
from trekmail.realm.model import Domain
from trekmail.relay import client, mx
from trekmail.relay.managed import ManagedRelay, SourcePools


class Broken:
    """A resolver whose MX lookups fail with C{exception}."""

    def __init__(self, exception):
        self.exception = exception

    def lookupMailExchange(self, name):
        return defer.fail(self.exception)


def hosts(resolver, domain):
    results = []
    mx.mail_hosts(resolver, domain).addBoth(results.append)
    return results[0]


class MailHostTests(unittest.TestCase):
    def test_preference_order_with_addresses(self):
        zone = Zone({
            ("d.test", dns.MX): [dns.Record_MX(20, b"b.d.test"), dns.Record_MX(10, b"a.d.test")],
            ("a.d.test", dns.A): [dns.Record_A("127.0.0.5")],
            ("b.d.test", dns.A): [dns.Record_A("127.0.0.6"), dns.Record_A("127.0.0.7")],
        })
        self.assertEqual(hosts(zone, "d.test"),
                         [("a.d.test", ["127.0.0.5"]), ("b.d.test", ["127.0.0.6", "127.0.0.7"])])

    def test_no_mx_falls_back_to_address(self):
        zone = Zone({("d.test", dns.A): [dns.Record_A("127.0.0.5")]})
        self.assertEqual(hosts(zone, "d.test"), [("d.test", ["127.0.0.5"])])

    def test_mx_host_without_address_is_skipped(self):
        zone = Zone({
            ("d.test", dns.MX): [dns.Record_MX(10, b"gone.d.test"), dns.Record_MX(20, b"b.d.test")],
            ("b.d.test", dns.A): [dns.Record_A("127.0.0.6")],
        })
        self.assertEqual(hosts(zone, "d.test"), [("b.d.test", ["127.0.0.6"])])

    def test_nxdomain_is_permanent(self):
        failure = hosts(Broken(error.DNSNameError("d.test")), "d.test")
        failure.trap(mx.LookupFailed)
        self.assertTrue(failure.value.permanent)
        self.assertIn("5.1.2", str(failure.value))

    def test_servfail_and_timeout_are_temporary(self):
        for exception in (error.DNSServerError("x"), error.DNSQueryTimeoutError("x")):
            failure = hosts(Broken(exception), "d.test")
            failure.trap(mx.LookupFailed)
            self.assertFalse(failure.value.permanent)

    def test_null_mx_is_permanent(self):
        zone = Zone({("d.test", dns.MX): [dns.Record_MX(0, b"")]})
        failure = hosts(zone, "d.test")
        failure.trap(mx.LookupFailed)
        self.assertTrue(failure.value.permanent)
        self.assertIn("5.1.10", str(failure.value))

    def test_address_literal(self):
        self.assertEqual(hosts(Broken(AssertionError()), "[127.0.0.8]"), [("127.0.0.8", ["127.0.0.8"])])


class SourcePoolTests(unittest.TestCase):
    def domain(self, age_days, now):
        return Domain("d.test", 1, now - age_days * 86400, "dkim", "")

    def test_young_domains_use_new_pool_others_rotate_warm(self):
        clock = Clock()
        clock.advance(1795262400)
        pools = SourcePools({"warm": ("127.0.0.2", "127.0.0.3"), "new": ("127.0.0.4",)}, clock)
        self.assertEqual(pools.pool_for(self.domain(7.9, clock.seconds())), "new")
        self.assertEqual(pools.pool_for(self.domain(8, clock.seconds())), "warm")
        self.assertEqual(pools.pool_for(None), "warm")
        self.assertEqual([pools.address("warm") for _ in range(3)], ["127.0.0.2", "127.0.0.3", "127.0.0.2"])
        self.assertEqual(pools.address("new"), "127.0.0.4")
        self.assertIsNone(SourcePools({}, clock).address("warm"))


class Connection:
    """What L{client.connect} fires with, after the test played the session."""

    def __init__(self, transactions=0, ran_out=False, error=None):
        self.transactions = transactions
        self.ran_out = ran_out
        self.error = error
        self.error_reply = error is not None
        self.tls_attempted = False


def capture_connections(testcase):
    """Replace the relay client's connect: each attempt is kept as C{(next_job, Deferred)} in the returned list."""
    connections = []

    def connect(endpoint, identity, next_job, **options):
        d = defer.Deferred()
        connections.append((next_job, d))
        return d

    testcase.patch(client, "connect", connect)
    return connections


class SharedConnectionTests(unittest.TestCase):
    def setUp(self):
        self.connections = capture_connections(self)
        self.relay = ManagedRelay(
            reactor=Clock(),
            resolver=None,
            hostname="mail.test",
            connections_per_destination=4,
        )

    def deliver(self, recipient="bob@[127.0.0.1]"):
        results = []
        self.relay.deliver("a@example.com", [recipient], b"x\r\n").addCallback(results.append)
        return results

    def ok(self, job):
        job.finish(client.outcomes(list(job.recipients), 250, "2.0.0 ok"))

    def test_connection_on_its_way_keeps_the_message_it_was_opened_for(self):
        first, second = self.deliver(), self.deliver()
        (take_a, ended_a), (take_b, ended_b) = self.connections
        self.ok(take_a())
        self.assertIsNone(take_a())
        self.ok(take_b())
        self.assertEqual((len(first), len(second)), (1, 1))
        self.assertEqual(len(self.connections), 2)

    def test_connection_that_found_no_work_does_not_fail_later_messages(self):
        """At the cap, a message that came after a connection ran out gets that connection back."""
        self.relay.connections_per_destination = 1
        first = self.deliver()
        [(take_a, ended_a)] = self.connections
        self.ok(take_a())
        self.assertIsNone(take_a())
        third = self.deliver()
        self.assertEqual(len(self.connections), 1)
        ended_a.callback(Connection(transactions=1, ran_out=True))
        take_c, ended_c = self.connections[1]
        self.ok(take_c())
        self.assertEqual([o.code for o in first[0] + third[0]], [250, 250])

    def test_no_connection_without_a_message_for_it(self):
        """A connection that ran out while others are on their way for the rest does not reconnect."""
        first = self.deliver()
        [(take_a, ended_a)] = self.connections
        self.ok(take_a())
        self.assertIsNone(take_a())
        second = self.deliver()
        self.assertEqual(len(self.connections), 2)
        ended_a.callback(Connection(transactions=1, ran_out=True))
        self.assertEqual(len(self.connections), 2)
        self.ok(self.connections[1][0]())
        self.assertEqual([o.code for o in first[0] + second[0]], [250, 250])

    def test_host_that_took_nothing_fails_the_waiting_messages(self):
        results = self.deliver()
        [(take, ended)] = self.connections
        ended.callback(Connection(error=(421, "4.3.2 go away")))
        self.assertEqual([(o.code, o.text, o.permanent) for o in results[0]], [(421, "4.3.2 go away", False)])
