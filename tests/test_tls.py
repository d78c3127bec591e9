"""
The TLS identity: the generated pair follows C{[server] hostname}, an
installed pair that does not cover it is warned about.
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.logger import LogLevel, capturedLogs
from twisted.trial import unittest

from trekmail import settings, tls
from trekmail.config import Config

from tests.support import write_config


def leaf(config):
    with open(config.get("tls", "certificate"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def warnings(events):
    return [e for e in events if e["log_level"] == LogLevel.warn]


class NameMatchTests(unittest.TestCase):
    def test_exact_and_wildcard(self):
        self.assertTrue(tls.name_matches("mail.example.com", "MAIL.example.com."))
        self.assertTrue(tls.name_matches("*.example.com", "mail.example.com"))
        self.assertFalse(tls.name_matches("*.example.com", "example.com"))
        self.assertFalse(tls.name_matches("*.example.com", "a.mail.example.com"))
        self.assertFalse(tls.name_matches("mail.example.com", "mx.example.com"))


class GeneratedPairTests(unittest.TestCase):
    def config(self, directory, hostname, extra=""):
        return Config.from_file(write_config(directory, "[server]\nhostname = %s\n%s" % (hostname, extra)))

    def test_generated_pair_covers_hostname_without_warning(self):
        config = self.config(self.mktemp(), "mail.test")
        with capturedLogs() as events:
            settings.tls_options(config)
        self.assertEqual(warnings(events), [])
        self.assertTrue(tls.generated(leaf(config)))
        self.assertTrue(tls.covers(leaf(config), "mail.test"))

    def test_hostname_change_regenerates_our_pair(self):
        directory = self.mktemp()
        settings.tls_options(self.config(directory, "mail.test"))
        before = leaf(self.config(directory, "mail.test"))
        config = self.config(directory, "mx.example.org")
        with capturedLogs() as events:
            settings.tls_options(config)
        after = leaf(config)
        self.assertNotEqual(before.serial_number, after.serial_number)
        self.assertTrue(tls.covers(after, "mx.example.org"))
        self.assertEqual(warnings(events), [])
        settings.tls_options(config)
        self.assertEqual(leaf(config).serial_number, after.serial_number, "kept while the name is unchanged")

    def with_installed_pair(self, name):
        """A config for mx.example.org whose files hold a CA-signed pair for C{name}: (config, cert_pem)."""
        config = self.config(self.mktemp(), "mx.example.org")
        os.makedirs(os.path.dirname(config.get("tls", "certificate")))
        cert_pem, key_pem = installed(name)
        for key, pem in (("certificate", cert_pem), ("private_key", key_pem)):
            with open(config.get("tls", key), "wb") as f:
                f.write(pem)
        return config, cert_pem

    def test_installed_pair_not_covering_hostname_is_kept_and_warned_about(self):
        config, cert_pem = self.with_installed_pair("other.example.net")
        with capturedLogs() as events:
            settings.tls_options(config)
        self.assertEqual(leaf(config).public_bytes(serialization.Encoding.PEM), cert_pem)
        [warning] = warnings(events)
        self.assertIn("mx.example.org", warning["log_format"].format(**warning))
        self.assertIn("other.example.net", warning["log_format"].format(**warning))

    def test_wildcard_certificate_covers_hostname(self):
        config, _ = self.with_installed_pair("*.example.org")
        with capturedLogs() as events:
            settings.tls_options(config)
        self.assertEqual(warnings(events), [])


def installed(name):
    """A pair as a CA or an operator's openssl would make it: not marked as ours."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
