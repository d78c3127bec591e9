"""
Relay through an SMTP profile against a real provider stand-in on
loopback: TLS verified against a test CA, AUTH required, and a
self-signed provider that must get no credentials.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.provider import Provider, TestCA
from trekmail.realm.profiles import ProfileLogin, SmtpProfile
from trekmail.relay import smarthost

MESSAGE = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"

CA = TestCA()


def login(port, tls="starttls", password="SG.secret-key", username="apikey", profile_id=3):
    profile = SmtpProfile(profile_id, 1, "sendgrid", "127.0.0.1", port, tls, username, None, 0.0)
    return ProfileLogin(profile, password)


class SmarthostTests(unittest.TestCase):
    @inlineCallbacks
    def provider(self, **options):
        provider = Provider(CA, **options)
        port = yield provider.listen(reactor)
        self.addCleanup(provider.stop)
        return provider, port

    def relay(self):
        return smarthost.Smarthost(reactor, "mail.test", trust_root=CA.trust_root, timeout=10)

    @inlineCallbacks
    def test_starttls_auth_and_send(self):
        provider, port = yield self.provider(mode="starttls")
        result = yield self.relay().deliver_via_profile(
            login(port), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.SENT, result.explanation)
        self.assertTrue(result.ok)
        self.assertEqual(provider.seen_credentials, [(b"apikey", b"SG.secret-key")])
        self.assertEqual(provider.recipients, ["bob@example.org"])
        self.assertIn(b".leading dot", provider.messages[0])

    @inlineCallbacks
    def test_implicit_tls(self):
        provider, port = yield self.provider(mode="implicit")
        result = yield self.relay().deliver_via_profile(
            login(port, tls="implicit"), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.SENT, result.explanation)
        self.assertEqual(len(provider.messages), 1)

    @inlineCallbacks
    def test_plain_profile_sends_credentials_in_clear_only_when_asked(self):
        provider, port = yield self.provider(mode="none")
        result = yield self.relay().deliver_via_profile(
            login(port, tls="none"), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.SENT, result.explanation)

    @inlineCallbacks
    def test_starttls_profile_refuses_a_server_without_tls(self):
        provider, port = yield self.provider(mode="none")
        result = yield self.relay().deliver_via_profile(
            login(port), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.PERMANENT)
        self.assertEqual(provider.seen_credentials, [])
        self.assertIn("TLS", result.explanation)

    @inlineCallbacks
    def test_self_signed_starttls_refused_without_credentials(self):
        provider, port = yield self.provider(mode="starttls", trusted=False)
        result = yield self.relay().deliver_via_profile(
            login(port), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.PERMANENT)
        self.assertIn("could not be verified", result.explanation)
        self.assertIn("credentials were not sent", result.explanation)
        self.assertEqual(provider.seen_credentials, [])
        self.assertEqual(provider.messages, [])

    @inlineCallbacks
    def test_self_signed_implicit_refused(self):
        provider, port = yield self.provider(mode="implicit", trusted=False)
        result = yield self.relay().deliver_via_profile(
            login(port, tls="implicit"), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.PERMANENT)
        self.assertIn("could not be verified", result.explanation)
        self.assertEqual(provider.seen_credentials, [])

    @inlineCallbacks
    def test_certificate_for_another_name_is_refused_like_an_untrusted_one(self):
        """
        A certificate the trusted CA issued for another host fails in
        service_identity, after the handshake, not in OpenSSL's chain check:
        it must still be permanent and say why, on both TLS modes.
        """
        for mode in ("starttls", "implicit"):
            provider, port = yield self.provider(mode=mode, wrong_name=True)
            result = yield self.relay().deliver_via_profile(
                login(port, tls=mode), "alice@example.com", ["bob@example.org"], MESSAGE)
            self.assertEqual(result.status, smarthost.PERMANENT, mode)
            self.assertIn("could not be verified", result.explanation)
            self.assertIn("not issued to 127.0.0.1", result.explanation)
            self.assertIn("credentials were not sent", result.explanation)
            self.assertNotIn("retried", result.explanation)
            self.assertTrue(all(o.permanent and o.status == "5.4.1" for o in result.outcomes))
            self.assertEqual(provider.seen_credentials, [])
            self.assertEqual(provider.messages, [])
        result = yield self.relay().check_login(login(port, tls=mode))
        self.assertEqual(result.status, smarthost.PERMANENT)
        self.assertIn("not issued to 127.0.0.1", result.explanation)

    @inlineCallbacks
    def test_bad_credentials_are_permanent_with_a_plain_explanation(self):
        provider, port = yield self.provider(mode="starttls")
        result = yield self.relay().deliver_via_profile(
            login(port, password="AKIA-wrong"), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.PERMANENT)
        self.assertEqual(result.code, 535)
        self.assertIn("refused the profile's credentials", result.explanation)
        self.assertIn("smtp profile test 3", result.explanation)
        self.assertNotIn("AKIA-wrong", result.explanation)
        self.assertEqual(provider.messages, [])

    @inlineCallbacks
    def test_provider_4xx_is_temporary(self):
        provider, port = yield self.provider(mode="starttls")
        provider.temporary = True
        result = yield self.relay().deliver_via_profile(
            login(port), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.TEMPORARY)
        self.assertEqual(result.code, 451)
        self.assertIn("retried", result.explanation)

    @inlineCallbacks
    def test_connection_refused_elsewhere_is_temporary(self):
        provider, port = yield self.provider(mode="starttls")
        yield provider.stop()
        result = yield self.relay().deliver_via_profile(
            login(port), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.TEMPORARY)

    @inlineCallbacks
    def test_port_25_refused_says_use_587(self):
        result = yield self.relay().deliver_via_profile(
            login(25), "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, smarthost.PERMANENT)
        self.assertIn("use port 587", result.explanation)
        self.assertTrue(all(o.permanent for o in result.outcomes))

    @inlineCallbacks
    def test_check_login_sends_nothing(self):
        provider, port = yield self.provider(mode="starttls")
        result = yield self.relay().check_login(login(port))
        self.assertTrue(result.ok, result.explanation)
        self.assertEqual(provider.seen_credentials, [(b"apikey", b"SG.secret-key")])
        self.assertEqual(provider.messages, [])

    @inlineCallbacks
    def test_check_login_reports_bad_credentials_and_untrusted_certificates(self):
        provider, port = yield self.provider(mode="starttls")
        result = yield self.relay().check_login(login(port, password="nope"))
        self.assertEqual((result.status, result.code), (smarthost.PERMANENT, 535))
        untrusted, port = yield self.provider(mode="starttls", trusted=False)
        result = yield self.relay().check_login(login(port))
        self.assertEqual(result.status, smarthost.PERMANENT)
        self.assertIn("could not be verified", result.explanation)
        self.assertEqual(untrusted.seen_credentials, [])


class ProfileTransportTests(unittest.TestCase):
    @inlineCallbacks
    def test_permanent_outcomes_carry_the_explanation(self):
        provider = Provider(CA, mode="starttls")
        port = yield provider.listen(reactor)
        self.addCleanup(provider.stop)
        relay = smarthost.Smarthost(reactor, "mail.test", trust_root=CA.trust_root, timeout=10)
        outcomes = yield smarthost.ProfileTransport(relay, login(port, password="bad")).deliver(
            "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(len(outcomes), 1)
        self.assertTrue(outcomes[0].permanent)
        self.assertEqual(outcomes[0].code, 535)
        self.assertIn("refused the profile's credentials", outcomes[0].text)
        outcomes = yield smarthost.ProfileTransport(relay, login(port)).deliver(
            "alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertTrue(outcomes[0].delivered)
