"""
C{doctor ADDRESS} reports all ten checks for a mailbox broken in each of
the ten ways, names the first blocking one, and says "all clear" for a
healthy one; live DNS from a test server, a live provider stand-in for
the BYO check.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.provider import Provider
from tests.sending_site import CA, Site
from trekmail.policy.limits import day_number

ADDRESS = "alice@example.com"


class DoctorTests(unittest.TestCase):
    @inlineCallbacks
    def healthy(self, plan="starter", publish=True, **account):
        self.site = Site(self)
        account.setdefault("verified", True)
        self.account = yield self.site.call("account_add", owner_email="owner@example.net", plan=plan, **account)
        yield self.site.call("domain_add", name="example.com", account_id=self.account["id"])
        yield self.site.call("mailbox_add", address=ADDRESS, password="correct horse")
        if publish:
            self.site.publish((yield self.site.call("domain_dns", name="example.com")))

    def doctor(self, **options):
        return self.site.call("doctor", address=ADDRESS, **options)

    @inlineCallbacks
    def assertCheck(self, number, contains, **options):
        """Check C{number} is the first blocking one, and every other check passes."""
        answer = yield self.doctor(**options)
        self.assertEqual(answer["result"], "fail", answer)
        self.assertEqual(answer["check"], number, answer)
        self.assertIn(contains, answer["problem"] + " " + answer["fix"])
        self.assertStatuses(answer, {number: "blocking"})
        return answer

    @inlineCallbacks
    def assertAdvisory(self, number, contains):
        answer = yield self.doctor()
        self.assertEqual(answer["result"], "advisory", answer)
        self.assertNotIn("check", answer)
        entry = self.assertStatuses(answer, {number: "advisory"})[number - 1]
        self.assertIn(contains, entry["problem"] + " " + entry["fix"])
        self.assertIn("check %d" % (number,), answer["summary"])
        return answer

    def assertStatuses(self, answer, failing):
        checks = answer["checks"]
        self.assertEqual([c["check"] for c in checks], list(range(1, 11)), answer)
        self.assertEqual({c["check"]: c["status"] for c in checks if c["status"] != "ok"}, failing, answer)
        return checks

    @inlineCallbacks
    def test_all_clear(self):
        yield self.healthy()
        answer = yield self.doctor(recipients=3, password="correct horse")
        self.assertEqual(answer["result"], "all clear", answer)
        self.assertEqual([c["check"] for c in answer["checks"]], list(range(1, 11)))

    @inlineCallbacks
    def test_1_owner_unverified(self):
        yield self.healthy(verified=False, registered="2026-03-01")
        yield self.assertCheck(1, "verify your email")

    @inlineCallbacks
    def test_2_dns(self):
        yield self.healthy(publish=False)
        answer = yield self.assertAdvisory(2, "include:spf.trekmail.test")
        self.assertIn("domain verify example.com", answer["checks"][1]["fix"])

    @inlineCallbacks
    def test_every_check_reported_past_a_failing_one(self):
        """Unverified DNS does not hide a paused mailbox or a suspension behind it."""
        yield self.healthy(publish=False)
        yield self.site.call("mailbox_pause", address=ADDRESS, paused=True)
        yield self.site.call("account_suspend", account_id=self.account["id"], reason="billing")
        answer = yield self.doctor()
        self.assertEqual((answer["result"], answer["check"]), ("fail", 6), answer)
        self.assertIn("mailbox resume", answer["fix"])
        self.assertStatuses(answer, {2: "advisory", 6: "blocking", 7: "blocking"})
        self.assertIn("check 7", answer["summary"])
        self.assertIn("check 2", answer["summary"])

    @inlineCallbacks
    def test_3_nano(self):
        yield self.healthy(plan="nano")
        yield self.assertCheck(3, "route")

    @inlineCallbacks
    def test_4_daily_cap(self):
        yield self.healthy()
        day = day_number(reactor.seconds())
        yield self.site.db(lambda db: db.execute(
            "INSERT INTO send_daily (scope, key, day, count) VALUES ('mailbox', ?, ?, 100000)", (ADDRESS, day)))
        yield self.assertCheck(4, "sending quota")

    @inlineCallbacks
    def test_5_recipients(self):
        yield self.healthy()
        yield self.assertCheck(5, "batches of 100", recipients=200)

    @inlineCallbacks
    def test_6_paused(self):
        yield self.healthy()
        yield self.site.call("mailbox_pause", address=ADDRESS, paused=True)
        yield self.assertCheck(6, "mailbox resume")

    @inlineCallbacks
    def test_7_suspended(self):
        yield self.healthy()
        yield self.site.call("account_suspend", account_id=self.account["id"], reason="billing")
        yield self.assertCheck(7, "billing issue")

    @inlineCallbacks
    def test_8_wrong_password_or_no_mailbox(self):
        yield self.healthy()
        yield self.assertCheck(8, "mailbox password", password="owner's password")
        answer = yield self.site.call("doctor", address="bob@example.com")
        self.assertEqual((answer["result"], answer["check"]), ("fail", 8))
        self.assertIn("does not exist", answer["problem"])

    @inlineCallbacks
    def test_9_byo_profile_credentials(self):
        yield self.healthy()
        provider = Provider(CA, mode="starttls")
        port = yield provider.listen(reactor)
        self.addCleanup(provider.stop)
        yield self.site.call("route_new", domain="example.com", name="sg", host="127.0.0.1", port=port,
                             tls="starttls", username="apikey", password="AKIA-not-smtp")
        answer = yield self.assertCheck(9, "refused the profile's credentials")
        self.assertNotIn("AKIA-not-smtp", str(answer))
        self.assertEqual(provider.messages, [])

    @inlineCallbacks
    def test_9_passes_with_good_credentials(self):
        yield self.healthy()
        provider = Provider(CA, mode="implicit")
        port = yield provider.listen(reactor)
        self.addCleanup(provider.stop)
        yield self.site.call("route_new", domain="example.com", name="sg", host="127.0.0.1", port=port,
                             tls="implicit", username="apikey", password="SG.secret-key")
        answer = yield self.doctor()
        self.assertEqual(answer["result"], "all clear", answer)

    @inlineCallbacks
    def test_10_recent_remote_rejections(self):
        yield self.healthy()
        now = reactor.seconds()
        yield self.site.db(lambda db: db.execute(
            "INSERT INTO hard_bounces (domain, address, count, first_at, last_at, last_diagnostic)"
            " VALUES ('example.com', 'gone@example.org', 1, ?, ?, '550 5.1.1 no such user')", (now, now)))
        answer = yield self.assertAdvisory(10, "gone@example.org")
        self.assertIn("550 5.1.1", answer["checks"][9]["problem"])
