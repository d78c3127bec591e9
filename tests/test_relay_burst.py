"""
A burst of messages to one host over loopback, with STARTTLS: every
connection the managed relay opens must carry a message, since each one
costs the remote a TLS handshake (and counts against its limits).
"""

from twisted.internet import defer, reactor, ssl, task
from twisted.names import dns
from twisted.trial import unittest

from tests.delivery_support import Sink
from tests.provider import TestCA
from trekmail.relay.managed import ManagedRelay

CA = TestCA()


class Resolver:
    """remote.test's MX is 127.0.0.1 (the sink), given as an address."""

    def lookupMailExchange(self, name):
        return defer.succeed(([dns.RRHeader(name, dns.MX, payload=dns.Record_MX(10, b"127.0.0.1"))], [], []))


class BurstTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_every_connection_carries_a_message(self):
        sink = Sink(tls=CA.server_options)
        port = sink.listen(self)
        relay = ManagedRelay(
            reactor=reactor,
            resolver=Resolver(),
            hostname="mail.test",
            port=port,
            tls_context=ssl.CertificateOptions(),
            connections_per_destination=4,
        )
        self.addCleanup(relay.stop)
        sent = []
        for group in range(15):
            for _ in range(3):
                sent.append(relay.deliver("alice@example.com", ["bob@remote.test"], b"Subject: burst\r\n\r\nhi\r\n"))
            yield task.deferLater(reactor, 0.01, lambda: None)
        results = yield defer.gatherResults(sent)
        self.assertEqual([o.code for r in results for o in r], [250] * 45)
        while relay.clients:
            yield task.deferLater(reactor, 0.01, lambda: None)
        counts = [s.messages for s in sink.sessions]
        self.assertEqual(sum(counts), 45)
        self.assertNotIn(0, counts, counts)
        self.assertEqual(sink.tls_used, [True] * 45)
        self.assertLessEqual(len(counts), 45)
