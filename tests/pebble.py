"""
Debian's C{pebble} (a test-only ACME CA, RFC 8555) started for a test:
with a TLS pair of a CA made here, checking HTTP-01 on a port the test
names, and resolving every domain to 127.0.0.1 through a twisted.names
server on loopback.
"""

import datetime
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
from twisted.internet import defer, reactor, task
from twisted.names import dns, server

from tests.server_process import free_port
from tests.support import client_context

DOMAIN = "mail.pebble.test"
"""The name the tests order certificates for (resolved to 127.0.0.1 like any other)."""


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
    """The certificate a TLS handshake on C{port} asking for DOMAIN is given; call in a thread."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context().wrap_socket(raw, server_hostname=DOMAIN) as wrapped:
            return x509.load_der_x509_certificate(wrapped.getpeercert(binary_form=True))


class Pebble:
    """
    @ivar directory_url: the ACME directory, once L{start} has fired.
    @ivar ca_file: the CA the directory's HTTPS chains to.
    """

    def __init__(self, testcase, directory):
        self.testcase = testcase
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.ca_file = pebble_pair(directory)
        self.log_path = os.path.join(directory, "pebble.log")
        self.process = None
        self.directory_url = None

    @defer.inlineCallbacks
    def start(self, http_port, validity=None):
        """
        Serve DNS and start pebble, validating HTTP-01 on C{http_port};
        C{validity}: the seconds its certificates last (pebble's own
        default, five years, otherwise).  Fires once it listens.
        """
        dns_port = free_port()
        factory = server.DNSServerFactory(clients=[Loopback()])
        for port in (reactor.listenUDP(dns_port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1"),
                     reactor.listenTCP(dns_port, factory, interface="127.0.0.1")):
            self.testcase.addCleanup(port.stopListening)
        acme_port = free_port()
        settings = {
            "listenAddress": "127.0.0.1:%d" % acme_port,
            "managementListenAddress": "127.0.0.1:%d" % free_port(),
            "certificate": os.path.join(self.directory, "cert.pem"),
            "privateKey": os.path.join(self.directory, "key.pem"),
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False}
        if validity is not None:
            settings["certificateValidityPeriod"] = validity
        config = os.path.join(self.directory, "pebble.json")
        with open(config, "w") as f:
            json.dump({"pebble": settings}, f)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [shutil.which("pebble") or "/usr/bin/pebble", "-config", config, "-dnsserver", "127.0.0.1:%d" % dns_port],
            stdout=log, stderr=log,
            env=dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"))
        log.close()
        self.testcase.addCleanup(self.stop)
        yield self._listening(acme_port)
        self.directory_url = "https://127.0.0.1:%d/dir" % acme_port

    def stop(self):
        self.process.terminate()
        self.process.wait(10)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    @defer.inlineCallbacks
    def _listening(self, port):
        deadline = time.monotonic() + 20
        while True:
            self.testcase.assertIsNone(self.process.poll(), "pebble exited:\n" + self.log())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                self.testcase.assertLess(time.monotonic(), deadline, "pebble never listened:\n" + self.log())
                yield task.deferLater(reactor, 0.1, lambda: None)
