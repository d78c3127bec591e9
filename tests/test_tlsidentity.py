"""
The served identity: several pairs chosen by SNI over real TLS
handshakes, a reload that changes the pair for new handshakes only, and
a broken file on reload that keeps the current pair.
"""

import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import protocol, reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.protocols.wire import Echo
from twisted.trial import unittest

from tests.support import client_context
from tests.test_tls import installed
from trekmail import tls
from trekmail.durable import replace_private
from trekmail.tlsidentity import IdentitySettings, ServerIdentity


def der(pem):
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class IdentityTests(unittest.TestCase):
    def settings(self, **extra):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return IdentitySettings(certificate=os.path.join(directory, "cert.pem"),
                                private_key=os.path.join(directory, "key.pem"), hostname="mail.test", **extra)

    def pair_file(self, directory, name, subject):
        """A key and its certificate in one file, as the SNI directory and ACME keep them: the certificate PEM."""
        os.makedirs(directory, exist_ok=True)
        cert_pem, key_pem = installed(subject)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(key_pem + cert_pem)
        return cert_pem

    def serve(self, identity):
        port = reactor.listenTCP(0, TLSMemoryBIOFactory(identity, False, protocol.Factory.forProtocol(Echo)),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @staticmethod
    def served(port, name=None):
        """The certificate a handshake asking for C{name} (none: no SNI) is given; call in a thread."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_context().wrap_socket(raw, server_hostname=name) as wrapped:
                return wrapped.getpeercert(binary_form=True)

    def default(self, settings):
        with open(settings.certificate, "rb") as f:
            return der(f.read())

    @inlineCallbacks
    def test_pair_chosen_by_server_name(self):
        sni = os.path.abspath(self.mktemp())
        net = self.pair_file(sni, "example.net.pem", "*.example.net")
        org = self.pair_file(sni, "example.org.pem", "imap.example.org")
        settings = self.settings(sni_directory=sni)
        port = self.serve(ServerIdentity(settings))
        default = self.default(settings)
        for name, expected in (("imap.example.net", der(net)), ("IMAP.example.org", der(org)),
                               ("mail.test", default), (None, default), ("example.net", default)):
            self.assertEqual((yield threads.deferToThread(self.served, port, name)), expected, name)

    @inlineCallbacks
    def test_acme_pair_covering_the_hostname_is_the_default(self):
        acme = os.path.abspath(self.mktemp())
        cert = self.pair_file(acme, "pair.pem", "mail.test")
        port = self.serve(ServerIdentity(self.settings(acme_pair=os.path.join(acme, "pair.pem"))))
        self.assertEqual((yield threads.deferToThread(self.served, port)), der(cert))

    @inlineCallbacks
    def test_reload_changes_the_pair_of_new_handshakes(self):
        settings = self.settings()
        identity = ServerIdentity(settings)
        port = self.serve(identity)
        before = self.default(settings)
        cert_pem, key_pem = installed("mail.test")
        replace_private(settings.private_key, key_pem, 0o600)
        replace_private(settings.certificate, cert_pem, 0o644)
        self.assertEqual((yield threads.deferToThread(self.served, port)), before, "only on reload")
        self.assertTrue(identity.reload())
        self.assertEqual((yield threads.deferToThread(self.served, port)), der(cert_pem))

    def test_broken_file_on_reload_keeps_the_current_pair(self):
        sni = os.path.abspath(self.mktemp())
        self.pair_file(sni, "example.net.pem", "*.example.net")
        identity = ServerIdentity(self.settings(sni_directory=sni))
        before = identity.serverConnectionForTLS(None).get_context()
        with open(os.path.join(sni, "example.net.pem"), "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\n")
        with capturedLogs() as events:
            self.assertFalse(identity.reload())
        [error] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn("example.net.pem", error["log_format"].format(**error))
        self.assertIs(identity.serverConnectionForTLS(None).get_context(), before)

    def test_mismatched_extra_pair_stops_start_up(self):
        sni = os.path.abspath(self.mktemp())
        os.makedirs(sni)
        with open(os.path.join(sni, "bad.pem"), "wb") as f:
            f.write(tls.self_signed("other.test")[1] + installed("x.example.net")[0])
        with self.assertRaises(tls.CertificateError) as raised:
            ServerIdentity(self.settings(sni_directory=sni))
        self.assertEqual(raised.exception.key, "sni_directory")
