"""
The LDAP backend's [realm] keys: defaults that match the shipped schema,
and a refusal naming the key for each setting that cannot work.  Also
the entry parsers and the answer cache, which need no server.
"""

import datetime
import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from trekmail.config import Config, ConfigError
from trekmail.realm.ldapclient import Entry
from trekmail.realm.ldapdirectory import (
    AnswerCache,
    Malformed,
    parse_account,
    parse_account_number,
)
from trekmail.realm.ldapsettings import ATTRIBUTE_DEFAULTS, fill
from trekmail import settings as wiring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def settings(**realm):
    lines = ["[realm]", "backend = ldap", "base_dn = dc=example,dc=net"]
    lines += ["%s = %s" % item for item in realm.items()]
    return wiring.ldap(Config.from_text("\n".join(lines) + "\n"))


class SettingsTests(unittest.TestCase):
    def test_defaults_match_the_shipped_schema(self):
        s = settings()
        self.assertEqual(s.urls, ("ldap://127.0.0.1:389",))
        self.assertEqual(s.auth, "bind")
        self.assertEqual((s.mailbox_base, s.domain_base, s.account_base), ("dc=example,dc=net",) * 3)
        self.assertEqual(s.attributes, ATTRIBUTE_DEFAULTS)
        with open(os.path.join(ROOT, "etc", "ldap", "trekmail-schema.ldif")) as f:
            schema = f.read()
        for attribute in ATTRIBUTE_DEFAULTS.values():
            if attribute.startswith("trekmail"):
                self.assertIn("NAME '%s'" % (attribute,), schema)

    def test_example_config_is_valid(self):
        with open(os.path.join(ROOT, "etc", "ldap", "trekmail-ldap.ini")) as f:
            text = f.read()
        password = os.path.abspath(self.mktemp())
        with open(password, "w") as f:
            f.write("service-secret\n")
        self.assertIn("bind_password_file = etc/ldap/service-password\n", text)
        text = text.replace("etc/ldap/service-password", password)
        s = wiring.ldap(Config.from_text(text))
        self.assertEqual(s.bind_password, "service-secret")
        self.assertEqual(s.mailbox_base, "ou=mailboxes,dc=example,dc=net")

    def test_overrides(self):
        s = settings(
            ldap_url="ldaps://a.example.net ldap://b.example.net:1389",
            ldap_mailbox_base="ou=people,dc=example,dc=net",
            ldap_mailbox_filter="(&(objectClass=inetOrgPerson)(|(mail=%s)(uid=%s)))",
            ldap_attributes="paused=mailPaused plan=businessCategory",
            ldap_auth="compare",
        )
        self.assertEqual(len(s.urls), 2)
        self.assertEqual(s.mailbox_base, "ou=people,dc=example,dc=net")
        self.assertEqual(s.domain_base, "dc=example,dc=net")
        self.assertEqual(s.attributes["paused"], "mailPaused")
        self.assertEqual(s.attributes["plan"], "businessCategory")
        self.assertEqual(s.attributes["password"], "userPassword")

    def assertRefused(self, key, **realm):
        e = self.assertRaises(ConfigError, settings, **realm)
        self.assertEqual((e.section, e.key), ("realm", key))
        return str(e)

    def test_bad_settings_name_their_key(self):
        self.assertRefused("ldap_mailbox_filter", ldap_mailbox_filter="(mail=alice@example.com)")
        self.assertRefused("ldap_domain_filter", ldap_domain_filter="(&(associatedDomain=%s)")
        self.assertIn("unknown field 'pasword'", self.assertRefused("ldap_attributes", ldap_attributes="pasword=x"))
        self.assertRefused("ldap_attributes", ldap_attributes="paused")
        self.assertRefused("ldap_url", ldap_url="http://127.0.0.1")
        self.assertRefused("ldap_timeout", ldap_timeout="0")
        self.assertRefused("ldap_pool_size", ldap_pool_size="-1")
        self.assertRefused("bind_password_file", bind_password_file=self.mktemp())
        self.assertRaises(ConfigError, Config.from_text, "[realm]\nldap_auth = sasl\n")

    def test_no_base(self):
        e = self.assertRaises(
            ConfigError, wiring.ldap, Config.from_text("[realm]\nbackend = ldap\n")
        )
        self.assertEqual(e.key, "ldap_mailbox_base")

    def test_password_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        self.assertEqual(settings(bind_password_file=path).bind_password, "s3cret")


class FillTests(unittest.TestCase):
    """Every value is escaped (RFC 4515) before it goes into a filter."""

    def test_escapes(self):
        self.assertEqual(fill("(mail=%s)", "*)(uid=*"), r"(mail=\2a\29\28uid=\2a)")
        self.assertEqual(fill("(mail=%s)", "a\\b\0"), r"(mail=a\5cb\00)")
        self.assertEqual(fill("(|(mail=%s)(uid=%s))", "x*"), r"(|(mail=x\2a)(uid=x\2a))")

    def test_plain_values_unchanged(self):
        self.assertEqual(fill("(trekmailAccountId=%s)", 7), "(trekmailAccountId=7)")
        self.assertEqual(fill("(mail=%s)", "zoë@example.com"), "(mail=zoë@example.com)")


def entry(**attributes):
    return Entry("cn=x,dc=example,dc=net", {k: [v.encode()] for k, v in attributes.items()})


class ParseTests(unittest.TestCase):
    def test_account(self):
        account = parse_account(
            entry(
                mail="Owner@Example.com",
                trekmailPlan="Pro",
                trekmailPaid="FALSE",
                trekmailOwnerVerified="TRUE",
                trekmailRegistered="20260301230000-0200",
                trekmailSuspension="Abuse",
            ),
            7,
            ATTRIBUTE_DEFAULTS,
        )
        self.assertEqual(account.id, 7)
        self.assertEqual(account.owner_email, "owner@example.com")
        self.assertEqual(account.plan, "pro")
        self.assertEqual((account.paid, account.owner_verified), (False, True))
        self.assertEqual(account.registered, datetime.date(2026, 3, 2))
        self.assertEqual(account.suspension, "abuse")

    def test_account_defaults(self):
        account = parse_account(
            entry(mail="o@example.com", trekmailPlan="nano", createTimestamp="20260105101010Z"),
            1,
            ATTRIBUTE_DEFAULTS,
        )
        self.assertEqual((account.paid, account.owner_verified, account.suspension), (True, False, None))
        self.assertEqual(account.registered, datetime.date(2026, 1, 5))

    def test_unusable_accounts(self):
        good = dict(mail="o@example.com", trekmailPlan="nano", trekmailRegistered="2026-01-05")
        for change in (
            {"trekmailPlan": "gold"},
            {"trekmailSuspension": "fraud"},
            {"trekmailPaid": "maybe"},
            {"trekmailRegistered": "yesterday"},
            {"trekmailRegistered": "20261341000000Z"},
            {"mail": ""},
        ):
            self.assertRaises(Malformed, parse_account, entry(**dict(good, **change)), 1, ATTRIBUTE_DEFAULTS)

    def test_account_number(self):
        self.assertEqual(parse_account_number(entry(trekmailAccountId="12"), ATTRIBUTE_DEFAULTS), 12)
        for value in ("", "x", "0", "-3"):
            self.assertRaises(
                Malformed, parse_account_number, entry(trekmailAccountId=value), ATTRIBUTE_DEFAULTS
            )


class AnswerCacheTests(unittest.TestCase):
    def test_expires_after_ttl(self):
        clock = Clock()
        cache = AnswerCache(clock, 60)
        cache.put("k", None)
        self.assertEqual(cache.get("k"), (True, None))
        clock.advance(59.9)
        self.assertEqual(cache.get("k"), (True, None))
        clock.advance(0.1)
        self.assertEqual(cache.get("k"), (False, None))

    def test_zero_ttl_caches_nothing(self):
        cache = AnswerCache(Clock(), 0)
        cache.put("k", 1)
        self.assertEqual(cache.get("k"), (False, None))

    def test_bounded(self):
        cache = AnswerCache(Clock(), 60, size=2)
        for key in "abc":
            cache.put(key, key)
        self.assertEqual([cache.get(k)[0] for k in "abc"], [False, True, True])
