"""
When the ACME certificate is ordered and renewed, on a task.Clock, with
a fake order in place of the CA; and the HTTP-01 responder.
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, task
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from tests.support import write_config
from trekmail import acmerenewal, settings
from trekmail.config import Config, ConfigError
from trekmail.acmerenewal import RETRY_SECONDS, Challenges, Renewal, renewal_delay
from trekmail.durable import replace_private

DAY = 86400.0
START = 1_800_000_000.0


def pair_pem(names, not_after):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(not_after - 90 * DAY, datetime.timezone.utc))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + certificate.public_bytes(serialization.Encoding.PEM)


class ScheduleTests(unittest.TestCase):
    domains = ("mail.example.com", "mx.example.com")

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.pair = os.path.join(os.path.abspath(self.mktemp()), "pair.pem")
        self.orders = []
        self.installs = []
        self.failing = False
        self.challenges = Challenges()
        self.renewal = Renewal(clock=self.clock, pair=self.pair, domains=self.domains, renew_before=30 * DAY,
                               order=self.order, run=lambda f, *a: defer.maybeDeferred(f, *a),
                               installed=lambda: self.installs.append(self.clock.seconds()),
                               challenges=self.challenges)
        self.addCleanup(self.renewal.stopService)

    def order(self, publish, withdraw):
        """What acmeclient.obtain does, minus the CA: a 90-day pair kept in the pair file."""
        self.orders.append(self.clock.seconds())
        publish("token", "token.thumbprint")
        withdraw("token")
        if self.failing:
            raise RuntimeError("the CA said no")
        pem = pair_pem(self.domains, self.clock.seconds() + 90 * DAY)
        replace_private(self.pair, pem)
        return pem

    def test_delay(self):
        self.assertEqual(renewal_delay(START + 90 * DAY, START, 30 * DAY), 60 * DAY)
        self.assertEqual(renewal_delay(START + 10 * DAY, START, 30 * DAY), 0.0)

    def test_no_pair_orders_at_start_then_renews_thirty_days_before_expiry(self):
        self.renewal.startService()
        self.clock.advance(0)
        self.assertEqual(self.orders, [START])
        self.assertEqual(self.installs, [START])
        self.clock.advance(60 * DAY - 1)
        self.assertEqual(len(self.orders), 1)
        self.clock.advance(1)
        self.assertEqual(self.orders, [START, START + 60 * DAY])
        self.assertEqual(len(self.installs), 2)
        self.assertEqual(self.challenges.pending, {})

    def test_kept_pair_waits_for_its_renewal_time(self):
        replace_private(self.pair, pair_pem(self.domains, START + 40 * DAY))
        self.renewal.startService()
        self.clock.advance(10 * DAY - 1)
        self.assertEqual(self.orders, [])
        self.clock.advance(1)
        self.assertEqual(self.orders, [START + 10 * DAY])

    def test_pair_missing_a_domain_is_ordered_again_at_once(self):
        replace_private(self.pair, pair_pem(self.domains[:1], START + 80 * DAY))
        self.renewal.startService()
        self.clock.advance(0)
        self.assertEqual(self.orders, [START])

    def test_failure_is_retried_and_installs_nothing(self):
        self.failing = True
        self.renewal.startService()
        self.clock.advance(0)
        self.clock.advance(RETRY_SECONDS)
        self.assertEqual(self.orders, [START, START + RETRY_SECONDS])
        self.assertEqual(self.installs, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.failing = False
        self.clock.advance(RETRY_SECONDS)
        self.assertEqual(len(self.installs), 1)

    def test_stop_cancels_the_next_renewal(self):
        self.renewal.startService()
        self.clock.advance(0)
        self.renewal.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ChallengesTests(unittest.TestCase):
    def get(self, challenges, path):
        request = DummyRequest(path.split(b"/")[1:])
        request.path = path
        body = challenges.render_GET(request)
        return request.responseCode or 200, body

    def test_pending_token_is_answered_others_are_not(self):
        challenges = Challenges()
        challenges.publish("abc", "abc.xyz")
        self.assertEqual(self.get(challenges, b"/.well-known/acme-challenge/abc"), (200, b"abc.xyz"))
        self.assertEqual(self.get(challenges, b"/.well-known/acme-challenge/abd")[0], 404)
        self.assertEqual(self.get(challenges, b"/abc")[0], 404)
        challenges.withdraw("abc")
        self.assertEqual(self.get(challenges, b"/.well-known/acme-challenge/abc")[0], 404)

    def test_pending_tokens_are_bounded(self):
        challenges = Challenges()
        for n in range(acmerenewal.MAX_TOKENS):
            challenges.publish(str(n), "v")
        self.assertRaises(RuntimeError, challenges.publish, "one more", "v")


class SettingsTests(unittest.TestCase):
    def config(self, extra):
        return Config.from_file(write_config(self.mktemp(), extra))

    def test_no_directory_no_acme(self):
        self.assertIsNone(settings.acme(self.config("")))

    def test_acme_needs_the_http_listener_and_a_domain(self):
        with self.assertRaises(ConfigError) as raised:
            settings.acme(self.config("[acme]\ndirectory_url = https://ca.test/dir\ndomains = mail.test\n"))
        self.assertEqual((raised.exception.section, raised.exception.key), ("acme", "directory_url"))
        with self.assertRaises(ConfigError) as raised:
            settings.acme(self.config("[acme]\ndirectory_url = https://ca.test/dir\n[listen]\nhttp = tcp:0\n"))
        self.assertEqual(raised.exception.key, "domains")

    def test_files_under_the_data_dir(self):
        config = self.config("[acme]\ndirectory_url = https://ca.test/dir\ndomains = a.test b.test\n"
                             "[listen]\nhttp = tcp:0\n")
        acme = settings.acme(config)
        self.assertEqual(acme.domains, ("a.test", "b.test"))
        self.assertEqual(acme.renew_before, 30 * DAY)
        self.assertEqual(acme.pair, settings.tls_identity(config).acme_pair)
        self.assertTrue(acme.account_key.startswith(config.data_dir))
