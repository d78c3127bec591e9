"""
C{domain verify} against a DNS server started by the test: each record
judged with what to fix, status Pending -> Active, and an unverified
domain still allowed to send (docs/sending-rules.md, check 2).
"""

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.sending_site import Site
from trekmail.policy import gate
from trekmail.realm import store


def by_record(answer):
    table = {}
    for record in answer["records"]:
        table.setdefault(record["record"], []).append(record)
    return table


class DomainVerifyTests(unittest.TestCase):
    @inlineCallbacks
    def setup(self):
        self.site = Site(self)
        account = yield self.site.call("account_add", owner_email="owner@example.net", plan="starter", verified=True)
        yield self.site.call("domain_add", name="example.com", account_id=account["id"])
        yield self.site.call("mailbox_add", address="alice@example.com", password="strong password")
        self.account = account
        self.dns = yield self.site.call("domain_dns", name="example.com")

    @inlineCallbacks
    def test_nothing_published_stays_pending_but_can_send(self):
        yield self.setup()
        answer = yield self.site.call("domain_verify", domain="example.com")
        self.assertEqual(answer["status"], "pending")
        records = by_record(answer)
        self.assertEqual(records["SPF"][0]["status"], "fail")
        self.assertIn("include:spf.trekmail.test", records["SPF"][0]["fix"])
        self.assertEqual(records["DKIM"][0]["status"], "fail")
        self.assertIn("dkim._domainkey.example.com", records["DKIM"][0]["fix"])
        self.assertEqual(records["DMARC"][0]["status"], "warn")
        context = yield self.site.db(store.mailbox_context, "alice@example.com")
        self.assertEqual(context.domain.dns_status, "pending")
        self.assertIsNone(gate.denial(context, 1795262400.0))

    @inlineCallbacks
    def test_published_records_make_it_active(self):
        yield self.setup()
        self.site.publish(self.dns)
        answer = yield self.site.call("domain_verify", domain="example.com")
        self.assertEqual(answer["status"], "active", answer)
        self.assertTrue(all(r["status"] == "ok" for r in answer["records"]), answer)
        domain = yield self.site.call("domain_get", name="example.com")
        self.assertEqual(domain["dns_status"], "active")

    @inlineCallbacks
    def test_wrong_dkim_key_and_missing_include(self):
        yield self.setup()
        self.site.publish(self.dns)
        self.site.set_txt("example.com", ["v=spf1 include:_spf.google.com -all"])
        self.site.set_txt("dkim._domainkey.example.com", ["v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong"])
        answer = yield self.site.call("domain_verify", domain="example.com")
        self.assertEqual(answer["status"], "pending")
        records = by_record(answer)
        self.assertEqual(records["SPF"][0]["fix"], "add include:spf.trekmail.test to the SPF record")
        self.assertIn("not the one this server signs with", records["DKIM"][0]["fix"])

    @inlineCallbacks
    def test_missing_provider_include_only_warns(self):
        yield self.setup()
        self.site.publish(self.dns)
        yield self.site.call("route_new", domain="example.com", name="sg", host="smtp.sendgrid.net", port=587,
                             tls="starttls", username="apikey", password="SG.x")
        answer = yield self.site.call("domain_verify", domain="example.com")
        self.assertEqual(answer["status"], "active")
        warnings = [r for r in by_record(answer)["SPF"] if r["status"] == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("include:sendgrid.net", warnings[0]["fix"])
        self.site.set_txt("example.com", ["v=spf1 include:spf.trekmail.test include:sendgrid.net -all"])
        answer = yield self.site.call("domain_verify", domain="example.com")
        self.assertEqual([r["status"] for r in by_record(answer)["SPF"]], ["ok"])

    @inlineCallbacks
    def test_two_spf_records_fail(self):
        yield self.setup()
        self.site.publish(self.dns)
        self.site.set_txt("example.com", ["v=spf1 include:spf.trekmail.test -all", "v=spf1 -all"])
        answer = yield self.site.call("domain_verify", domain="example.com")
        self.assertIn("merge them", by_record(answer)["SPF"][0]["fix"])

    @inlineCallbacks
    def test_weak_dmarc_warns(self):
        yield self.setup()
        self.site.publish(self.dns)
        self.site.set_txt("_dmarc.example.com", ["v=DMARC1; p=none"])
        answer = yield self.site.call("domain_verify", domain="example.com")
        self.assertEqual(answer["status"], "active")
        self.assertEqual(by_record(answer)["DMARC"][0]["status"], "warn")
