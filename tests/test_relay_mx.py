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
from trekmail.relay import mx
from trekmail.relay.managed import SourcePools


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
