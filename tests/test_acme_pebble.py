"""
A certificate from a real ACME server: Debian's C{pebble}, started here
with a TLS pair of our own CA, validating HTTP-01 on our challenge
listener and resolving the domain through a twisted.names server that
answers 127.0.0.1.  The renewal is ordered when the (task.Clock) time
reaches thirty days before expiry, and each pair reaches new TLS
handshakes through the SIGHUP reload.
"""

import datetime
import functools
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.names import dns, server
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.protocols.wire import Echo
from twisted.trial import unittest

from tests.server_process import free_port
from tests.support import client_context
from trekmail import acmeclient, tls
from trekmail.acmerenewal import Challenges, Renewal
from trekmail.reload import Reload
from trekmail.tlsidentity import IdentitySettings, ServerIdentity
from trekmail.workerthreads import WorkerThreads

DOMAIN = "mail.pebble.test"
DAY = 86400.0


class Loopback:
    """A resolver for twisted.names' server: every A query is 127.0.0.1, anything else has no records."""

    def query(self, query, timeout=None):
        if query.type != dns.A:
            return defer.succeed(([], [], []))
        answer = dns.RRHeader(name=query.name.name, type=dns.A, ttl=60,
                              payload=dns.Record_A("127.0.0.1", ttl=60))
        return defer.succeed(([answer], [], []))


def pebble_pair(directory):
    """A CA and a leaf for 127.0.0.1 signed by it, as files: the CA's path (what the client trusts)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca.pem": ca.public_bytes(serialization.Encoding.PEM),
             "cert.pem": leaf.public_bytes(serialization.Encoding.PEM),
             "key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())}
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return os.path.join(directory, "ca.pem")


def served(port):
    """The certificate a TLS handshake asking for DOMAIN is given; call in a thread."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context().wrap_socket(raw, server_hostname=DOMAIN) as wrapped:
            return x509.load_der_x509_certificate(wrapped.getpeercert(binary_form=True))


class PebbleTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        ca_file = pebble_pair(self.directory)

        dns_port = free_port()
        factory = server.DNSServerFactory(clients=[Loopback()])
        for port in (reactor.listenUDP(dns_port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1"),
                     reactor.listenTCP(dns_port, factory, interface="127.0.0.1")):
            self.addCleanup(port.stopListening)

        self.challenges = Challenges()
        http = reactor.listenTCP(0, self.challenges.site(), interface="127.0.0.1")
        self.addCleanup(http.stopListening)

        acme_port = free_port()
        config = os.path.join(self.directory, "pebble.json")
        with open(config, "w") as f:
            json.dump({"pebble": {
                "listenAddress": "127.0.0.1:%d" % acme_port,
                "managementListenAddress": "127.0.0.1:%d" % free_port(),
                "certificate": os.path.join(self.directory, "cert.pem"),
                "privateKey": os.path.join(self.directory, "key.pem"),
                "httpPort": http.getHost().port, "tlsPort": free_port(),
                "ocspResponderURL": "", "externalAccountBindingRequired": False}}, f)
        pebble = shutil.which("pebble") or "/usr/bin/pebble"
        log = open(os.path.join(self.directory, "pebble.log"), "wb")
        self.pebble = subprocess.Popen(
            [pebble, "-config", config, "-dnsserver", "127.0.0.1:%d" % dns_port], stdout=log, stderr=log,
            env=dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"))
        log.close()
        self.addCleanup(self.stop_pebble)
        yield self.listening(acme_port)

        self.settings = acmeclient.AcmeSettings(
            directory_url="https://127.0.0.1:%d/dir" % acme_port, email="ops@pebble.test", domains=(DOMAIN,),
            account_key=os.path.join(self.directory, "acme", "account.key"),
            pair=os.path.join(self.directory, "acme", "pair.pem"), ca_file=ca_file, renew_before=30 * DAY)

    def stop_pebble(self):
        self.pebble.terminate()
        self.pebble.wait(10)

    def pebble_log(self):
        with open(os.path.join(self.directory, "pebble.log"), errors="replace") as f:
            return f.read()

    @defer.inlineCallbacks
    def listening(self, port):
        deadline = time.monotonic() + 20
        while True:
            self.assertIsNone(self.pebble.poll(), "pebble exited:\n" + self.pebble_log())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                self.assertLess(time.monotonic(), deadline, "pebble never listened:\n" + self.pebble_log())
                yield task.deferLater(reactor, 0.1, lambda: None)

    @defer.inlineCallbacks
    def test_certificate_obtained_then_renewed_and_served(self):
        identity = ServerIdentity(IdentitySettings(
            certificate=os.path.join(self.directory, "tls", "cert.pem"),
            private_key=os.path.join(self.directory, "tls", "key.pem"),
            hostname=DOMAIN, acme_pair=self.settings.pair))
        listener = reactor.listenTCP(0, TLSMemoryBIOFactory(identity, False, protocol.Factory.forProtocol(Echo)),
                                     interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        self.assertTrue(tls.generated((yield threads.deferToThread(served, listener.getHost().port))))

        worker = WorkerThreads(reactor, 1, "test-acme")
        worker.start()
        self.addCleanup(worker.stop)
        installs = defer.DeferredQueue()
        reload = Reload(reactor, identity)
        clock = task.Clock()
        clock.advance(time.time())
        renewal = Renewal(clock=clock, pair=self.settings.pair, domains=self.settings.domains,
                          renew_before=self.settings.renew_before,
                          order=functools.partial(acmeclient.obtain, self.settings), run=worker.run,
                          installed=lambda: (reload.reload(), installs.put(clock.seconds())),
                          challenges=self.challenges, reactor=reactor)
        renewal.startService()
        self.addCleanup(renewal.stopService)
        clock.advance(0)
        yield installs.get()
        first = yield threads.deferToThread(served, listener.getHost().port)
        self.assertTrue(tls.covers(first, DOMAIN))
        self.assertFalse(tls.generated(first))
        self.assertEqual(self.challenges.pending, {}, "withdrawn once the order is done")

        renew_at = first.not_valid_after_utc.timestamp() - 30 * DAY
        clock.advance(renew_at - clock.seconds() - 1)
        self.assertEqual(installs.pending, [])
        clock.advance(1)
        self.assertEqual((yield installs.get()), renew_at)
        second = yield threads.deferToThread(served, listener.getHost().port)
        self.assertNotEqual(second.serial_number, first.serial_number)
        self.assertTrue(tls.covers(second, DOMAIN))
