import os
import stat

from twisted.trial import unittest

from trekmail.realm import store
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound

from tests.support import example, realm


def snapshot(admin):
    db = admin.db
    return [
        list(map(tuple, db.execute("SELECT * FROM %s ORDER BY 1" % (table,))))
        for table in ("accounts", "domains", "mailboxes")
    ]


class AccountTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, self.clock = realm(self)

    def test_add_defaults(self):
        account = self.admin.account_add("Owner@Example.NET", "Starter")
        self.assertEqual(account.owner_email, "owner@example.net")
        self.assertEqual(account.plan, "starter")
        self.assertTrue(account.paid)
        self.assertFalse(account.owner_verified)
        self.assertEqual(account.registered.isoformat(), "2026-11-21")
        self.assertIsNone(account.suspension)

    def test_trial_registered_verified(self):
        account = self.admin.account_add(
            "o@example.net", "pro", trial=True, registered="2026-01-02", verified=True
        )
        self.assertFalse(account.paid)
        self.assertTrue(account.owner_verified)
        self.assertEqual(account.registered.isoformat(), "2026-01-02")

    def test_set_plan_and_flags(self):
        account = self.admin.account_add("o@example.net", "nano", trial=True)
        changed = self.admin.account_set(account.id, plan="agency", verified=True, paid=True)
        self.assertEqual((changed.plan, changed.owner_verified, changed.paid), ("agency", True, True))

    def test_suspend_and_unsuspend(self):
        account = self.admin.account_add("o@example.net", "pro")
        self.assertEqual(self.admin.account_suspend(account.id, "billing").suspension, "billing")
        self.assertIsNone(self.admin.account_unsuspend(account.id).suspension)

    def test_refusals_leave_store_unchanged(self):
        example(self.admin)
        before = snapshot(self.admin)
        refusals = [
            (InvalidInput, lambda: self.admin.account_add("o2@example.net", "gold")),
            (InvalidInput, lambda: self.admin.account_add("not-an-address", "pro")),
            (InvalidInput, lambda: self.admin.account_add("o2@example.net", "pro", registered="yesterday")),
            (Duplicate, lambda: self.admin.account_add("OWNER@example.net", "pro")),
            (InvalidInput, lambda: self.admin.account_set(1, plan="gold")),
            (InvalidInput, lambda: self.admin.account_set("one", plan="pro")),
            (NotFound, lambda: self.admin.account_set(99, plan="pro")),
            (InvalidInput, lambda: self.admin.account_suspend(1, "boredom")),
            (NotFound, lambda: self.admin.account_suspend(42, "billing")),
            (InvalidInput, lambda: self.admin.domain_add("not a domain", 1)),
            (InvalidInput, lambda: self.admin.domain_add("-bad-.com", 1)),
            (Duplicate, lambda: self.admin.domain_add("EXAMPLE.com", 1)),
            (NotFound, lambda: self.admin.domain_add("new.example", 7)),
            (InvalidInput, lambda: self.admin.mailbox_add("bob", "strong password")),
            (InvalidInput, lambda: self.admin.mailbox_add("bob@@example.com", "strong password")),
            (NotFound, lambda: self.admin.mailbox_add("bob@elsewhere.org", "strong password")),
            (Duplicate, lambda: self.admin.mailbox_add("Alice@example.com", "strong password")),
            (InvalidInput, lambda: self.admin.mailbox_add("bob@example.com", "")),
            (NotFound, lambda: self.admin.mailbox_passwd("bob@example.com", "strong password")),
            (NotFound, lambda: self.admin.mailbox_pause("bob@example.com")),
        ]
        for error, call in refusals:
            self.assertRaises(error, call)
        self.assertEqual(snapshot(self.admin), before)


class DomainTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, self.clock = realm(self)
        self.account = self.admin.account_add("o@example.net", "starter")

    def test_add_generates_private_dkim_key(self):
        domain = self.admin.domain_add("Example.COM.", self.account.id)
        self.assertEqual(domain.name, "example.com")
        self.assertEqual(domain.dkim_selector, "dkim")
        self.assertEqual(domain.created, self.clock.seconds())
        path = os.path.join(self.config.data_dir, "dkim", "example.com.dkim.pem")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        from cryptography.hazmat.primitives import serialization
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        self.assertEqual(key.key_size, 2048)

    def test_dns_records(self):
        self.admin.domain_add("example.com", self.account.id)
        records = {(name, kind): value for name, kind, value in self.admin.domain_dns("example.com")}
        self.assertEqual(records[("example.com", "TXT")], "v=spf1 include:spf.example.net -all")
        self.assertTrue(records[("dkim._domainkey.example.com", "TXT")].startswith("v=DKIM1; k=rsa; p=MIIB"))
        self.assertTrue(records[("_dmarc.example.com", "TXT")].startswith("v=DMARC1;"))
        self.assertEqual(records[("example.com", "MX")], "10 mail.test.")

    def test_spf_include_is_configurable(self):
        config, admin, clock = realm(self, extra="[dns]\nspf_include = spf.provider.test\n")
        account = admin.account_add("o@example.net", "pro")
        admin.domain_add("example.com", account.id)
        values = [v for n, t, v in admin.domain_dns("example.com") if v.startswith("v=spf1")]
        self.assertEqual(values, ["v=spf1 include:spf.provider.test -all"])


class MailboxTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, self.clock = realm(self)
        example(self.admin)

    def test_password_is_hashed(self):
        mailbox = store.mailbox_get(self.admin.db, "alice@example.com")
        self.assertTrue(mailbox.password_hash.startswith("{SCRYPT}n=1024,"))
        dump = "\n".join(self.admin.db.iterdump())
        self.assertNotIn("correct horse", dump)

    def test_pause_resume(self):
        self.assertTrue(self.admin.mailbox_pause("alice@example.com").paused)
        self.assertFalse(self.admin.mailbox_pause("ALICE@example.com", False).paused)

    def test_context(self):
        context = store.mailbox_context(self.admin.db, "alice@example.com")
        self.assertEqual(context.domain.name, "example.com")
        self.assertEqual(context.account.plan, "starter")
        self.assertIsNone(store.mailbox_context(self.admin.db, "bob@example.com"))


class DirectoryOwnedTests(unittest.TestCase):
    def test_ldap_backend_refuses_local_writes(self):
        config, admin, clock = realm(self, extra="[realm]\nbackend = ldap\nldap_url = ldap://127.0.0.1:1\nbase_dn = dc=example,dc=net\n")
        before = snapshot(admin)
        for call in [
            lambda: admin.account_add("o@example.net", "pro"),
            lambda: admin.account_set(1, plan="pro"),
            lambda: admin.account_suspend(1, "billing"),
            lambda: admin.account_unsuspend(1),
            lambda: admin.domain_add("example.com", 1),
            lambda: admin.mailbox_add("a@example.com", "strong password"),
            lambda: admin.mailbox_passwd("a@example.com", "strong password"),
            lambda: admin.mailbox_pause("a@example.com"),
        ]:
            with self.assertRaises(InvalidInput) as caught:
                call()
            self.assertIn("LDAP directory", str(caught.exception))
        self.assertEqual(snapshot(admin), before)
