"""
Connection caps on the SMTP and HTTP listeners (trekmail.connlimit):
per client address and in total, freed when a connection closes, applied
outside TLS, and wired from the [mx], [submission], [admin] and [dav] keys.
"""

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.fakes import FakeQueue
from tests.support import write_config
from trekmail.config import Config, ConfigError
from trekmail.connlimit import HTTP_REFUSAL, SMTP_REFUSAL, CappedFactory, ConnectionCaps, client_key
from trekmail.service import Components, mx_service, submission_services


class Echo(Protocol):
    def connectionMade(self):
        self.transport.write(b"220 hello\r\n")

    def dataReceived(self, data):
        self.transport.write(data)


def connect(factory, host="192.0.2.1"):
    address = IPv4Address("TCP", host, 40000)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


class CapTests(unittest.TestCase):
    def factory(self, total=10, per_address=2, refusal=SMTP_REFUSAL):
        return CappedFactory(Factory.forProtocol(Echo), ConnectionCaps(total, per_address), refusal, clock=Clock())

    def test_address_past_its_cap_is_refused_and_closed(self):
        factory = self.factory()
        held = [connect(factory) for _ in range(2)]
        self.assertEqual([t.value() for _, t in held], [b"220 hello\r\n"] * 2)
        _, refused = connect(factory)
        self.assertEqual(refused.value(), b"421 4.7.0 too many connections, try again later\r\n")
        self.assertTrue(refused.disconnecting)
        _, other = connect(factory, "192.0.2.2")
        self.assertEqual(other.value(), b"220 hello\r\n")
        self.assertEqual(factory.caps.held, 3)

    def test_a_closed_connection_frees_its_slot(self):
        factory = self.factory(per_address=1)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"ping")
        self.assertEqual(transport.value(), b"220 hello\r\nping")
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual((factory.caps.held, dict(factory.caps.by_address)), (0, {}))
        _, again = connect(factory)
        self.assertEqual(again.value(), b"220 hello\r\n")

    def test_total_cap(self):
        factory = self.factory(total=3, refusal=HTTP_REFUSAL)
        for i in range(3):
            connect(factory, "192.0.2.%d" % (i,))
        _, refused = connect(factory, "198.51.100.1")
        self.assertTrue(refused.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(refused.disconnecting)

    def test_refused_before_tls(self):
        factory = CappedFactory(TLSMemoryBIOFactory(CertificateOptions(), False, Factory.forProtocol(Echo)),
                                ConnectionCaps(10, 0), b"", clock=Clock())
        protocol, transport = connect(factory)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.wrappedFactory.protocols, {})

    def test_wrapped_factory_refusing_gives_the_slot_back(self):
        inner = Factory()
        inner.buildProtocol = lambda addr: None
        factory = CappedFactory(inner, ConnectionCaps(10, 1), SMTP_REFUSAL, clock=Clock())
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.assertEqual(factory.caps.held, 0)

    def test_client_keys(self):
        self.assertEqual(client_key("192.0.2.7"), "192.0.2.7")
        self.assertEqual(client_key("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(client_key("2001:db8:1:2:aaaa::1"), client_key("2001:db8:1:2:bbbb::9"))
        self.assertNotEqual(client_key("2001:db8:1:2::1"), client_key("2001:db8:1:3::1"))
        self.assertIsNone(client_key(None))
        factory = self.factory(per_address=1)
        for host in ("2001:db8::1", "2001:db8::2"):
            address = IPv6Address("TCP", host, 1)
            factory.buildProtocol(address).makeConnection(StringTransport(peerAddress=address))
        self.assertEqual(factory.caps.held, 1)
        factory.buildProtocol(UNIXAddress(None)).makeConnection(StringTransport())
        self.assertEqual(factory.caps.held, 2)


class WiringTests(unittest.TestCase):
    def components(self, extra="", **listen):
        config = Config.from_file(write_config(self.mktemp(), extra, **listen))
        components = Components(config, MemoryReactorClock())
        self.addCleanup(components.database.db.close)
        return components

    def test_keys_reach_the_listeners(self):
        components = self.components(
            "[mx]\nmax_connections = 7\nmax_connections_per_ip = 2\n"
            "[submission]\nmax_connections = 9\nmax_connections_per_ip = 3\n",
            mx="tcp:10025", submission="tcp:10587", submissions="tcp:10465")
        mx = mx_service(components, FakeQueue()).factory
        self.assertEqual((mx.caps.total, mx.caps.per_address, mx.refusal), (7, 2, SMTP_REFUSAL))
        implicit, starttls = (s.factory for s in submission_services(components, FakeQueue()))
        self.assertEqual((starttls.caps.total, starttls.caps.per_address), (9, 3))
        self.assertEqual((implicit.refusal, starttls.refusal), (b"", SMTP_REFUSAL))
        self.assertIsInstance(implicit.wrappedFactory, TLSMemoryBIOFactory)

    def test_defaults_and_bad_values(self):
        config = Config.defaults()
        self.assertEqual([config.get(s, k) for s in ("mx", "submission", "admin", "dav")
                          for k in ("max_connections", "max_connections_per_ip")],
                         [1000, 20, 1000, 20, 100, 100, 1000, 50])
        with self.assertRaises(ConfigError) as raised:
            Config.from_text("[dav]\nmax_connections_per_ip = 0\n")
        self.assertEqual(str(raised.exception), "[dav] max_connections_per_ip: expected a number above 0, not '0'")
