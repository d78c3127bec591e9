"""
ACME under a real C{twistd -n trekmail}: the server, started with no
certificate of its own for its name, orders one from Debian's C{pebble}
over HTTP-01 on its C{[listen] http} listener, serves it on its TLS
listeners (IMAPS and submissions), and renews it before it expires.
Pebble issues certificates that live a day and some seconds, and C{[acme]
renew_before_days = 1} makes each due those seconds after it is issued.
"""

import imaplib
import os

from cryptography import x509
from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.pebble import DOMAIN, Pebble, served
from tests.server_process import ServerProcess, free_port
from tests.support import client_context, example_server, write_config
from tests.test_imap_processes_e2e import until
from trekmail import tls

PASSWORD = "strong password 1"
SPARE_SECONDS = 15
"""How long before its renewal is due a certificate from this pebble is issued."""


def kept(path):
    """The leaf of the pair the ACME client keeps at C{path}."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())[0]


class AcmeUnderTwistdTests(unittest.TestCase):
    timeout = 150

    @defer.inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        self.http, self.imaps, self.submissions = free_port(), free_port(), free_port()
        pebble = Pebble(self, os.path.join(directory, "pebble"))
        self.pebble = pebble
        yield pebble.start(self.http, validity=86400 + SPARE_SECONDS)
        path = write_config(
            directory,
            "[server]\nhostname = %s\n[acme]\ndirectory_url = %s\nemail = ops@pebble.test\ndomains = %s\n"
            "ca_file = %s\nrenew_before_days = 1\n" % (DOMAIN, pebble.directory_url, DOMAIN, pebble.ca_file),
            http="tcp:%d:interface=127.0.0.1" % self.http, imaps="tcp:%d:interface=127.0.0.1" % self.imaps,
            submissions="tcp:%d:interface=127.0.0.1" % self.submissions)
        self.config = example_server(path, password=PASSWORD)
        self.pair = os.path.join(self.config.data_dir, "acme", "pair.pem")
        self.server = ServerProcess(self, path)
        yield self.server.start([self.http, self.imaps, self.submissions])

    def obtained(self):
        return self.server.log().count("certificate for %s obtained" % (DOMAIN,))

    def failure_text(self):
        return "\n--- twistd ---\n%s\n--- pebble ---\n%s" % (self.server.log(), self.pebble.log())

    @defer.inlineCallbacks
    def served_everywhere(self):
        """The certificate both TLS listeners serve, checked to be one and the same."""
        on_imaps = yield threads.deferToThread(served, self.imaps)
        on_submissions = yield threads.deferToThread(served, self.submissions)
        self.assertEqual(on_imaps, on_submissions)
        return on_imaps

    def login(self):
        client = imaplib.IMAP4_SSL("127.0.0.1", self.imaps, ssl_context=client_context(), timeout=10)
        client.login("alice@example.com", PASSWORD)
        client.select("INBOX")
        return client

    @defer.inlineCallbacks
    def test_ordered_at_start_served_and_renewed_before_expiry(self):
        yield until(lambda: self.obtained() >= 1, "the first certificate" + self.failure_text(), timeout=60)
        yield until(lambda: "certificates reloaded" in self.server.log(), "installed" + self.failure_text())
        first = yield self.served_everywhere()
        self.assertFalse(tls.generated(first))
        self.assertTrue(tls.covers(first, DOMAIN))
        self.assertIn("Pebble", first.issuer.rfc4514_string())
        self.assertEqual(first.serial_number, kept(self.pair).serial_number)
        self.assertEqual(self.obtained(), 1, "not renewed before it is due" + self.failure_text())
        self.assertIn('"GET /.well-known/acme-challenge/', self.server.log(), "pebble validated on [listen] http")
        session = yield threads.deferToThread(self.login)
        self.addCleanup(session.shutdown)
        self.assertEqual(x509.load_der_x509_certificate(session.sock.getpeercert(binary_form=True)), first)

        yield until(lambda: self.obtained() >= 2, "the renewal" + self.failure_text(), timeout=SPARE_SECONDS + 45)
        yield until(lambda: self.server.log().count("certificates reloaded") >= 2, "installed" + self.failure_text())
        second = yield self.served_everywhere()
        self.assertNotEqual(second.serial_number, first.serial_number)
        self.assertTrue(tls.covers(second, DOMAIN))
        self.assertEqual(second.serial_number, kept(self.pair).serial_number)
        self.assertLess(second.not_valid_before_utc, first.not_valid_after_utc, "renewed before the old one expired")

        status, _ = yield threads.deferToThread(session.noop)
        self.assertEqual(status, "OK", "a session opened on the first certificate outlives its renewal")
        self.assertNotIn("Traceback", self.server.log())
