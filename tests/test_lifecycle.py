"""
Deleting accounts, domains and mailboxes and renaming mailboxes
(docs/cli.md, "Deleting and renaming"): what each verb leaves in the
database and on disk, its refusals, and the purge of deleted mail once
the retention period is over, on a L{task.Clock}.
"""

import io
import os

from twisted.internet import defer
from twisted.trial import unittest

from tests.support import NOON, example, realm
from trekmail import cli
from trekmail.crypto import SecretKeyring
from trekmail.mailstore import dav_principal_path, maildir_path
from trekmail.queue.suppression import record_hard_bounce
from trekmail.realm import dkimkeys, retention, store
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound
from trekmail.realm.profiles import ProfileAdministration

DAY = 86400


def put_mail(data_dir, address, name="1.msg", body=b"Subject: kept\r\n\r\nhello\r\n"):
    new = os.path.join(maildir_path(data_dir, address), "new")
    os.makedirs(new, exist_ok=True)
    with open(os.path.join(new, name), "wb") as f:
        f.write(body)


def put_dav(data_dir, address):
    book = os.path.join(dav_principal_path(data_dir, address), "contacts")
    os.makedirs(book)
    with open(os.path.join(book, "bob.vcf"), "w") as f:
        f.write("BEGIN:VCARD\r\nFN:Bob\r\nEND:VCARD\r\n")


def tree(path):
    """Every file under C{path}, relative to it."""
    return sorted(os.path.relpath(os.path.join(d, n), path) for d, _, names in os.walk(path) for n in names)


class LifecycleTestCase(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, self.clock = realm(self)
        self.data = self.config.data_dir
        self.account = example(self.admin)
        self.admin.mailbox_add("bob@example.com", "strong password")
        put_mail(self.data, "alice@example.com")
        put_dav(self.data, "alice@example.com")
        put_mail(self.data, "bob@example.com")

    def cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--config", self.config.path] + list(argv), stdout=out, stderr=err, clock=self.clock)
        return code, out.getvalue(), err.getvalue()


class MailboxDeleteTests(LifecycleTestCase):
    def test_refused_without_yes(self):
        code, out, err = self.cli("mailbox", "delete", "alice@example.com")
        self.assertEqual(code, 1)
        self.assertIn("repeat with --yes to confirm", err)
        self.assertEqual([m.address for m in self.admin.mailbox_list()], ["alice@example.com", "bob@example.com"])
        self.assertEqual(tree(maildir_path(self.data, "alice@example.com")), ["new/1.msg"])
        with self.assertRaises(InvalidInput):
            self.admin.mailbox_delete("alice@example.com", yes="yes")

    def test_row_goes_mail_and_dav_set_aside(self):
        code, out, err = self.cli("mailbox", "delete", "alice@example.com", "--yes")
        self.assertEqual(code, 0, err)
        self.assertEqual([m.address for m in self.admin.mailbox_list()], ["bob@example.com"])
        self.assertFalse(os.path.exists(maildir_path(self.data, "alice@example.com")))
        self.assertFalse(os.path.exists(dav_principal_path(self.data, "alice@example.com")))
        kept = os.path.join(self.data, "deleted", "20261121T120000Z-alice@example.com")
        self.assertIn("mail_kept_in: %s" % (kept,), out)
        self.assertEqual(tree(kept), ["dav/contacts/bob.vcf", "mail/new/1.msg"])
        self.assertEqual(tree(maildir_path(self.data, "bob@example.com")), ["new/1.msg"])
        self.assertTrue(os.path.exists(dkimkeys.key_path(self.data, "example.com")))
        self.assertEqual(self.admin.domain_get("example.com").name, "example.com")

    def test_deleted_twice_on_the_same_second_both_kept(self):
        self.admin.mailbox_delete("alice@example.com", yes=True)
        self.admin.mailbox_add("alice@example.com", "strong password")
        put_mail(self.data, "alice@example.com", "2.msg")
        second = self.admin.mailbox_delete("alice@example.com", yes=True)
        self.assertTrue(second["mail_kept_in"].endswith("-alice@example.com.2"))
        self.assertEqual(tree(second["mail_kept_in"]), ["mail/new/2.msg"])

    def test_unknown_mailbox(self):
        with self.assertRaises(NotFound):
            self.admin.mailbox_delete("carol@example.com", yes=True)

    def test_a_failed_move_keeps_the_row(self):
        self.patch(os, "rename", _fail_second(os.rename))
        with self.assertRaises(OSError):
            self.admin.mailbox_delete("alice@example.com", yes=True)
        self.assertEqual(store.mailbox_get(self.admin.db, "alice@example.com").address, "alice@example.com")
        self.assertEqual(tree(maildir_path(self.data, "alice@example.com")), ["new/1.msg"])
        self.assertEqual(tree(dav_principal_path(self.data, "alice@example.com")), ["contacts/bob.vcf"])


def _fail_second(rename):
    """An C{os.rename} whose second call fails (the DAV move after the Maildir's), then works again."""
    calls = []

    def flaky(source, target):
        calls.append(source)
        if len(calls) == 2:
            raise PermissionError(13, "denied", target)
        return rename(source, target)
    return flaky


def _fail_moving(path, rename):
    """An C{os.rename} that fails (as on a directory it may not write) for C{path} only."""
    def flaky(source, target):
        if source == path:
            raise PermissionError(13, "denied", source)
        return rename(source, target)
    return flaky


class DomainDeleteTests(LifecycleTestCase):
    def test_refused_while_it_has_mailboxes(self):
        code, out, err = self.cli("domain", "delete", "example.com", "--yes")
        self.assertEqual(code, 1)
        self.assertIn("still has 2 mailbox(es) (alice@example.com, bob@example.com)", err)
        self.assertIn("--force", err)
        self.assertEqual(len(self.admin.mailbox_list()), 2)
        self.assertTrue(os.path.exists(dkimkeys.key_path(self.data, "example.com")))

    def test_refused_without_yes(self):
        code, out, err = self.cli("domain", "delete", "example.com", "--force")
        self.assertEqual(code, 1)
        self.assertIn("repeat with --yes", err)
        self.assertEqual(len(self.admin.mailbox_list()), 2)

    def test_empty_domain_goes_with_key_route_and_suppressions(self):
        self.admin.domain_add("example.org", self.account.id)
        store.domain_update(self.admin.db, "example.org", route="managed")
        record_hard_bounce(self.admin.db, "example.org", "gone@far.test", NOON, "550 no", 1)
        record_hard_bounce(self.admin.db, "example.com", "gone@far.test", NOON, "550 no", 1)
        result = self.admin.domain_delete("example.org", yes=True)
        self.assertEqual(result["mailboxes_deleted"], [])
        self.assertIsNone(store.domain_find(self.admin.db, "example.org"))
        self.assertFalse(os.path.exists(dkimkeys.key_path(self.data, "example.org")))
        self.assertTrue(os.path.exists(dkimkeys.key_path(self.data, "example.com")))
        self.assertEqual([r["domain"] for r in self.admin.db.execute("SELECT domain FROM hard_bounces")],
                         ["example.com"])

    def test_forced_deletes_its_mailboxes_and_keeps_their_mail(self):
        code, out, err = self.cli("--json", "domain", "delete", "example.com", "--yes", "--force")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.admin.mailbox_list(), [])
        self.assertEqual(self.admin.domain_list(), [])
        self.assertFalse(os.path.exists(dkimkeys.key_path(self.data, "example.com")))
        self.assertFalse(os.path.exists(os.path.join(self.data, "mail", "example.com")))
        self.assertEqual(tree(os.path.join(self.data, "deleted")), [
            "20261121T120000Z-alice@example.com/dav/contacts/bob.vcf",
            "20261121T120000Z-alice@example.com/mail/new/1.msg",
            "20261121T120000Z-bob@example.com/mail/new/1.msg",
        ])
        self.assertEqual(store.account_get(self.admin.db, self.account.id).id, self.account.id)


    def test_a_failed_move_of_a_later_mailbox_puts_the_earlier_ones_back(self):
        self.patch(os, "rename", _fail_moving(maildir_path(self.data, "bob@example.com"), os.rename))
        with self.assertRaises(PermissionError):
            self.admin.domain_delete("example.com", yes=True, force=True)
        self.assertEqual([m.address for m in self.admin.mailbox_list()], ["alice@example.com", "bob@example.com"])
        self.assertEqual(tree(maildir_path(self.data, "alice@example.com")), ["new/1.msg"])
        self.assertEqual(tree(dav_principal_path(self.data, "alice@example.com")), ["contacts/bob.vcf"])
        self.assertEqual(tree(maildir_path(self.data, "bob@example.com")), ["new/1.msg"])
        self.assertEqual(tree(retention.deleted_dir(self.data)), [])
        self.assertTrue(os.path.exists(dkimkeys.key_path(self.data, "example.com")))


class AccountDeleteTests(LifecycleTestCase):
    def setUp(self):
        super().setUp()
        self.keyring = SecretKeyring.load(self.config.secret_key_path)
        self.profiles = ProfileAdministration(self.admin.db, self.clock, self.keyring)
        self.profiles.profile_add(self.account.id, "ses", "email-smtp.test", 587, "starttls",
                                  "AKIAUSERNAME", "SES-SECRET-PASSWORD")
        self.other = self.admin.account_add("other@example.net", "pro")
        self.admin.domain_add("other.test", self.other.id)
        self.admin.mailbox_add("carol@other.test", "strong password")
        self.profiles.profile_add(self.other.id, "own", "smtp.other.test", 587, "starttls", "carol", "OTHER-SECRET")
        self.sealed = self.admin.db.execute(
            "SELECT password_sealed FROM smtp_profiles WHERE account_id = ?", (self.account.id,)).fetchone()[0]

    def test_refused_without_yes(self):
        code, out, err = self.cli("account", "delete", str(self.account.id))
        self.assertEqual(code, 1)
        self.assertIn("repeat with --yes", err)
        self.assertEqual(len(self.admin.account_list()), 2)

    def test_everything_under_it_goes_and_its_secrets_are_wiped(self):
        code, out, err = self.cli("account", "delete", str(self.account.id), "--yes")
        self.assertEqual(code, 0, err)
        self.assertEqual([a.id for a in self.admin.account_list()], [self.other.id])
        self.assertEqual([d.name for d in self.admin.domain_list()], ["other.test"])
        self.assertEqual([m.address for m in self.admin.mailbox_list()], ["carol@other.test"])
        self.assertEqual([p.name for p in self.profiles.profile_list()], ["own"])
        self.assertFalse(os.path.exists(dkimkeys.key_path(self.data, "example.com")))
        self.assertTrue(os.path.exists(dkimkeys.key_path(self.data, "other.test")))
        self.assertEqual(sorted(os.listdir(os.path.join(self.data, "deleted"))), [
            "20261121T120000Z-alice@example.com", "20261121T120000Z-bob@example.com"])
        for name in os.listdir(self.data):
            if name.startswith("trekmail.sqlite"):
                with open(os.path.join(self.data, name), "rb") as f:
                    raw = f.read()
                self.assertNotIn(self.sealed.encode(), raw, name)
                self.assertNotIn(b"AKIAUSERNAME", raw, name)

    def test_a_failed_move_in_a_later_domain_puts_every_earlier_one_back(self):
        self.admin.domain_add("example.org", self.account.id)
        self.admin.mailbox_add("dan@example.org", "strong password")
        put_mail(self.data, "dan@example.org")
        self.patch(os, "rename", _fail_moving(maildir_path(self.data, "dan@example.org"), os.rename))
        with self.assertRaises(PermissionError):
            self.admin.account_delete(self.account.id, yes=True)
        self.assertEqual([m.address for m in self.admin.mailbox_list(domain="example.com")],
                         ["alice@example.com", "bob@example.com"])
        for address in ["alice@example.com", "bob@example.com", "dan@example.org"]:
            self.assertEqual(tree(maildir_path(self.data, address)), ["new/1.msg"], address)
        self.assertEqual(tree(dav_principal_path(self.data, "alice@example.com")), ["contacts/bob.vcf"])
        self.assertEqual(tree(retention.deleted_dir(self.data)), [])

    def test_unknown_account(self):
        with self.assertRaises(NotFound):
            self.admin.account_delete(999, yes=True)


class RenameTests(LifecycleTestCase):
    def test_address_mail_dav_and_password_follow(self):
        before = store.mailbox_get(self.admin.db, "alice@example.com")
        code, out, err = self.cli("mailbox", "rename", "alice@example.com", "Alicia@Example.com")
        self.assertEqual(code, 0, err)
        self.assertIn("address: alicia@example.com", out)
        after = store.mailbox_get(self.admin.db, "alicia@example.com")
        self.assertEqual(after.password_hash, before.password_hash)
        self.assertIsNone(store.mailbox_find(self.admin.db, "alice@example.com"))
        self.assertFalse(os.path.exists(maildir_path(self.data, "alice@example.com")))
        self.assertEqual(tree(maildir_path(self.data, "alicia@example.com")), ["new/1.msg"])
        self.assertEqual(tree(dav_principal_path(self.data, "alicia@example.com")), ["contacts/bob.vcf"])

    def test_into_another_domain_of_the_same_account(self):
        self.admin.domain_add("example.org", self.account.id)
        renamed = self.admin.mailbox_rename("alice@example.com", "alice@example.org")
        self.assertEqual((renamed.address, renamed.domain), ("alice@example.org", "example.org"))
        self.assertEqual(tree(maildir_path(self.data, "alice@example.org")), ["new/1.msg"])

    def test_refusals_leave_everything(self):
        other = self.admin.account_add("other@example.net", "pro")
        self.admin.domain_add("other.test", other.id)
        for new, kind, words in [
            ("bob@example.com", Duplicate, "already exists"),
            ("alice@other.test", InvalidInput, "another account"),
            ("alice@nowhere.test", InvalidInput, "not hosted here"),
            (".alice@example.com", InvalidInput, "not an email address"),
        ]:
            with self.assertRaises(kind) as caught:
                self.admin.mailbox_rename("alice@example.com", new)
            self.assertIn(words, str(caught.exception))
        code, out, err = self.cli("mailbox", "rename", "alice@example.com", "bob@example.com")
        self.assertEqual(code, 1)
        self.assertEqual([m.address for m in self.admin.mailbox_list()], ["alice@example.com", "bob@example.com"])
        self.assertEqual(tree(maildir_path(self.data, "alice@example.com")), ["new/1.msg"])
        self.assertEqual(tree(maildir_path(self.data, "bob@example.com")), ["new/1.msg"])

    def test_refused_when_the_new_address_has_data_on_disk(self):
        put_mail(self.data, "stray@example.com")
        with self.assertRaises(InvalidInput):
            self.admin.mailbox_rename("alice@example.com", "stray@example.com")
        self.assertEqual(store.mailbox_get(self.admin.db, "alice@example.com").address, "alice@example.com")


class AddOverDataOnDiskTests(LifecycleTestCase):
    """A new mailbox must not inherit what an address's earlier life left on disk."""

    def test_refused_over_a_leftover_maildir(self):
        self.admin.mailbox_delete("bob@example.com", yes=True)
        put_mail(self.data, "bob@example.com", "late.msg")  # a delivery still in flight at the delete
        with self.assertRaises(InvalidInput) as caught:
            self.admin.mailbox_add("bob@example.com", "strong password")
        self.assertIn(maildir_path(self.data, "bob@example.com"), str(caught.exception))
        self.assertIsNone(store.mailbox_find(self.admin.db, "bob@example.com"))
        self.assertEqual(tree(maildir_path(self.data, "bob@example.com")), ["new/late.msg"])

    def test_refused_over_leftover_dav_data(self):
        put_dav(self.data, "carol@example.com")
        with self.assertRaises(InvalidInput) as caught:
            self.admin.mailbox_add("carol@example.com", "strong password")
        self.assertIn(dav_principal_path(self.data, "carol@example.com"), str(caught.exception))
        self.assertIsNone(store.mailbox_find(self.admin.db, "carol@example.com"))

    def test_an_existing_mailbox_is_still_a_duplicate(self):
        with self.assertRaises(Duplicate):
            self.admin.mailbox_add("bob@example.com", "strong password")


class DirectoryOwnedTests(unittest.TestCase):
    def test_ldap_backend_refuses_the_lifecycle_verbs(self):
        config, admin, clock = realm(
            self, extra="[realm]\nbackend = ldap\nldap_url = ldap://127.0.0.1:1\nbase_dn = dc=example,dc=net\n")
        for call in [
            lambda: admin.account_delete(1, yes=True),
            lambda: admin.domain_delete("example.com", yes=True, force=True),
            lambda: admin.mailbox_delete("a@example.com", yes=True),
            lambda: admin.mailbox_rename("a@example.com", "b@example.com"),
        ]:
            with self.assertRaises(InvalidInput) as caught:
                call()
            self.assertIn("LDAP directory", str(caught.exception))


class RetentionTests(LifecycleTestCase):
    def purger(self):
        purge = retention.RetentionPurge(self.data, self.config.get("realm", "deleted_mail_retention_days"),
                                         self.clock, lambda f, *a: defer.execute(f, *a))
        purge.startService()
        self.addCleanup(purge.stopService)
        return purge

    def test_kept_for_the_retention_period_then_purged(self):
        self.admin.mailbox_delete("alice@example.com", yes=True)
        self.clock.advance(10 * DAY)
        self.admin.mailbox_delete("bob@example.com", yes=True)
        deleted = os.path.join(self.data, "deleted")
        os.makedirs(os.path.join(deleted, "operator-notes"))
        self.purger()
        self.clock.advance(20 * DAY - 1)
        self.assertEqual(sorted(os.listdir(deleted)), [
            "20261121T120000Z-alice@example.com", "20261201T120000Z-bob@example.com", "operator-notes"])
        self.clock.advance(retention.PURGE_EVERY)
        self.assertEqual(sorted(os.listdir(deleted)), ["20261201T120000Z-bob@example.com", "operator-notes"])
        self.clock.advance(10 * DAY)
        self.assertEqual(os.listdir(deleted), ["operator-notes"])

    def test_configurable(self):
        config, admin, clock = realm(self, extra="[realm]\ndeleted_mail_retention_days = 2\n")
        self.assertEqual(config.get("realm", "deleted_mail_retention_days"), 2)

    def test_a_failed_purge_is_logged_and_the_loop_goes_on(self):
        calls = []

        def run(function, *args):
            calls.append(args)
            return defer.fail(OSError("disk gone"))
        purge = retention.RetentionPurge(self.data, 30, self.clock, run)
        purge.startService()
        self.addCleanup(purge.stopService)
        self.clock.advance(retention.PURGE_EVERY)
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)

    def test_deleted_at_reads_the_name(self):
        self.assertEqual(retention.deleted_at("20261121T120000Z-alice@example.com"), NOON)
        self.assertIsNone(retention.deleted_at("notes"))
        self.assertIsNone(retention.deleted_at("2026-alice@example.com"))

