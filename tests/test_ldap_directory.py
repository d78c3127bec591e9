"""
L{LdapDirectory} against a real slapd loaded with the shipped schema and
sample LDIF: the facts it reads, the local rows it makes, escaping,
refresh within C{refresh_seconds}, and outages as temporary failures.
Cache expiry runs on a L{Clock}; LDAP itself runs on real threads.
"""

import os
import time

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from trekmail.realm import database, dkimkeys, schema, store
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.realm.ldapclient import LdapClient
from trekmail.realm.ldapdirectory import LdapDirectory, Malformed
from trekmail.realm.recipients import Recipients
from tests.slapd import SUFFIX, Slapd, ldap_config, started_directory
from trekmail import settings

ACCOUNT_1 = "trekmailAccountId=1,ou=accounts," + SUFFIX
SSHA_DN = "mail=ssha@example.com,ou=mailboxes," + SUFFIX


class DirectoryTestCase(unittest.TestCase):
    """A fresh slapd, sqlite file and L{LdapDirectory} per test."""

    auth = "compare"

    def setUp(self):
        self.slapd = Slapd(self.mktemp()).start()
        self.addCleanup(self.slapd.remove)
        self.data_dir = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.directory = self.make_directory()

    def make_directory(self, **realm):
        realm.setdefault("ldap_auth", self.auth)
        config = ldap_config(self.slapd, self.data_dir, **realm)
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        self.database = database.ThreadedDatabase(db, reactor)
        self.database.start()
        self.addCleanup(self.database.stop)
        self.settings = settings.ldap(config)
        directory = LdapDirectory(
            settings=self.settings,
            client=LdapClient(self.settings, reactor),
            database=self.database,
            reactor=reactor,
            clock=self.clock,
            data_dir=self.data_dir,
            refresh_seconds=config.get("realm", "refresh_seconds"),
        )
        directory.start()
        self.addCleanup(directory.stop)
        return directory


class FactsTests(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_mailbox(self):
        context = yield self.directory.mailbox("SSHA@Example.COM")
        self.assertEqual(context.address, "ssha@example.com")
        self.assertTrue(context.mailbox.password_hash.startswith("{SSHA}"))
        self.assertFalse(context.mailbox.paused)
        self.assertEqual(context.domain.name, "example.com")
        self.assertEqual(context.domain.account_id, 1)
        account = context.account
        self.assertEqual((account.id, account.owner_email, account.plan), (1, "owner@example.com", "starter"))
        self.assertEqual((account.paid, account.owner_verified, account.suspension), (True, True, None))
        self.assertEqual(account.registered.isoformat(), "2026-03-01")

    @defer.inlineCallbacks
    def test_no_aliases_but_plus_addressing(self):
        self.assertIsNone((yield self.directory.alias("ssha@example.com")))
        self.assertEqual((yield Recipients(self.directory).named("ssha+news@example.com")), ("ssha@example.com",))
        self.assertIsNone((yield Recipients(self.directory).named("nobody+news@example.com")))

    @defer.inlineCallbacks
    def test_paused_and_suspended(self):
        paused = yield self.directory.mailbox("paused@example.com")
        self.assertTrue(paused.mailbox.paused)
        carol = yield self.directory.mailbox("carol@example.org")
        self.assertEqual(carol.account.id, 2)
        self.assertEqual((carol.account.plan, carol.account.paid), ("nano", False))
        self.assertEqual(carol.account.suspension, "billing")
        self.assertFalse(carol.account.owner_verified)

    @defer.inlineCallbacks
    def test_unknown(self):
        self.assertIsNone((yield self.directory.mailbox("nobody@example.com")))
        self.assertIsNone((yield self.directory.mailbox("ssha@elsewhere.test")))
        self.assertIsNone((yield self.directory.domain("elsewhere.test")))
        self.assertIsNone((yield self.directory.mailbox("ssha")))

    @defer.inlineCallbacks
    def test_domain_of_missing_account(self):
        with self.slapd.connect() as c:
            c.add(
                "associatedDomain=orphan.test,ou=domains," + SUFFIX,
                ["trekmailDomain"],
                {"associatedDomain": "orphan.test", "trekmailAccountId": "99"},
            )
        self.assertIsNone((yield self.directory.domain("orphan.test")))

    @defer.inlineCallbacks
    def test_bind_mode_does_not_read_passwords(self):
        directory = self.make_directory(ldap_auth="bind")
        context = yield directory.mailbox("ssha@example.com")
        self.assertEqual(context.mailbox.password_hash, "")
        self.assertTrue((yield directory.bind("ssha@example.com", "ssha-Secret-1")))
        self.assertFalse((yield directory.bind("ssha@example.com", "wrong")))
        self.assertFalse((yield directory.bind("nobody@example.com", "ssha-Secret-1")))


class LocalRowTests(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_first_sight_makes_local_rows_and_a_dkim_key(self):
        self.clock.advance(1_800_000_000)
        first = yield defer.gatherResults(
            [self.directory.domain("example.com"), self.directory.domain("EXAMPLE.com.")]
        )
        domain, account = first[0]
        self.assertEqual(first[0], first[1])
        self.assertEqual(domain.created, 1_800_000_000)
        self.assertEqual(domain.dkim_selector, dkimkeys.DEFAULT_SELECTOR)
        self.assertEqual(domain.dns_status, "pending")
        key = dkimkeys.read_private_key(self.data_dir, "example.com")
        self.assertIn(b"PRIVATE KEY", key)
        self.clock.advance(3600)
        again, _ = yield self.directory.domain("example.com")
        self.assertEqual(again, domain)
        local = yield self.database.run(store.account_get, 1)
        self.assertEqual(local.plan, "starter")
        self.assertEqual(account, local)

    @defer.inlineCallbacks
    def test_local_routes_are_kept(self):
        yield self.directory.domain("example.com")
        yield self.database.run(store.account_update, 1, default_route="managed")
        yield self.database.run(store.domain_update, "example.com", route="managed")
        domain, account = yield self.directory.domain("example.com")
        self.assertEqual((domain.route, account.default_route), ("managed", "managed"))
        org, _ = yield self.directory.domain("example.org")
        self.assertIsNone(org.route)

    @defer.inlineCallbacks
    def test_local_copy_follows_the_directory(self):
        yield self.directory.domain("example.com")
        self.slapd.modify(ACCOUNT_1, trekmailPlan=["agency"], trekmailSuspension=["abuse"])
        self.clock.advance(60)
        domain, account = yield self.directory.domain("example.com")
        self.assertEqual((account.plan, account.suspension), ("agency", "abuse"))
        local = yield self.database.run(store.account_get, 1)
        self.assertEqual((local.plan, local.suspension), ("agency", "abuse"))


class InjectionTests(DirectoryTestCase):
    INJECTIONS = (
        "*",
        "*@example.com",
        "ssha*@example.com",
        "*)(uid=*",
        "*)(mail=*))(|(mail=*@example.com",
        "ssha@example.com)(|(mail=*",
        "ssha@example.com\0",
        "\\2a@example.com",
    )

    @defer.inlineCallbacks
    def test_nothing_is_found(self):
        for name in self.INJECTIONS:
            self.assertIsNone((yield self.directory.mailbox(name)), name)
            self.assertIsNone((yield self.directory.domain(name)), name)
            self.assertIsNone((yield self.directory.domain(name.replace("@", "."))), name)

    @defer.inlineCallbacks
    def test_client_escapes_what_reaches_the_server(self):
        """A wildcard that would match every mailbox matches none once escaped."""
        client = LdapClient(self.settings, reactor)
        client.start()
        self.addCleanup(client.stop)
        base = "ou=mailboxes," + SUFFIX
        found = yield client.search(base, "(mail=%s)", "ssha@example.com", [])
        self.assertEqual([e.dn for e in found], [SSHA_DN])
        for value in ("*", "*)(mail=*", "ssha*"):
            self.assertEqual((yield client.search(base, "(mail=%s)", value, [])), [])
        unescaped = yield client.search(base, "(mail=*)", "", [])
        self.assertEqual(len(unescaped), 2)


class RefreshTests(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_changes_seen_within_refresh_seconds(self):
        before = yield self.directory.mailbox("ssha@example.com")
        self.slapd.modify(SSHA_DN, trekmailPaused=["TRUE"], userPassword=["{SSHA}changed"])
        self.clock.advance(59)
        cached = yield self.directory.mailbox("ssha@example.com")
        self.assertEqual(cached, before)
        self.clock.advance(1)
        after = yield self.directory.mailbox("ssha@example.com")
        self.assertTrue(after.mailbox.paused)
        self.assertEqual(after.mailbox.password_hash, "{SSHA}changed")

    @defer.inlineCallbacks
    def test_new_entries_seen_within_refresh_seconds(self):
        self.assertIsNone((yield self.directory.mailbox("new@example.com")))
        with self.slapd.connect() as c:
            c.add(
                "mail=new@example.com,ou=mailboxes," + SUFFIX,
                ["inetOrgPerson", "trekmailMailbox"],
                {"cn": "New", "sn": "New", "mail": "new@example.com"},
            )
        self.clock.advance(60)
        self.assertIsNotNone((yield self.directory.mailbox("new@example.com")))

    @defer.inlineCallbacks
    def test_undeliverable_address_is_no_mailbox(self):
        """An entry whose address delivery would refuse (a slash) is not a mailbox: RCPT gets 550, not a bounce."""
        with self.slapd.connect() as c:
            c.add(
                "mail=a/b@example.com,ou=mailboxes," + SUFFIX,
                ["inetOrgPerson", "trekmailMailbox"],
                {"cn": "Slash", "sn": "Slash", "mail": "a/b@example.com", "userPassword": "secret"},
            )
        self.assertIsNone((yield self.directory.mailbox("a/b@example.com")))
        self.assertFalse((yield self.directory.bind("a/b@example.com", "secret")))

    @defer.inlineCallbacks
    def test_malformed_entry_is_a_temporary_failure(self):
        self.slapd.modify(ACCOUNT_1, trekmailPlan=["gold"])
        yield self.assertFailure(self.directory.mailbox("ssha@example.com"), Malformed)
        self.slapd.modify(ACCOUNT_1, trekmailPlan=["pro"])
        context = yield self.directory.mailbox("ssha@example.com")
        self.assertEqual(context.account.plan, "pro")

    @defer.inlineCallbacks
    def test_ambiguous_mailbox_is_a_temporary_failure(self):
        with self.slapd.connect() as c:
            c.add(
                "cn=twin,ou=mailboxes," + SUFFIX,
                ["inetOrgPerson", "trekmailMailbox"],
                {"cn": "twin", "sn": "Twin", "mail": "ssha@example.com"},
            )
        yield self.assertFailure(self.directory.mailbox("ssha@example.com"), DirectoryUnavailable)


class OutageTests(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_stopped_directory_then_recovery(self):
        yield self.directory.mailbox("ssha@example.com")
        self.slapd.stop()
        self.clock.advance(60)
        yield self.assertFailure(self.directory.mailbox("ssha@example.com"), DirectoryUnavailable)
        yield self.assertFailure(self.directory.mailbox("nobody@example.com"), DirectoryUnavailable)
        yield self.assertFailure(self.directory.domain("example.org"), DirectoryUnavailable)
        self.slapd.start()
        context = yield self.directory.mailbox("ssha@example.com")
        self.assertEqual(context.address, "ssha@example.com")

    @defer.inlineCallbacks
    def test_restart_between_lookups_is_invisible(self):
        """Pooled connections to the old process are replaced without a failure."""
        yield defer.gatherResults([self.directory.mailbox(a) for a in ("ssha@example.com", "argon2@example.com")])
        self.slapd.restart()
        self.clock.advance(60)
        found = yield defer.gatherResults(
            [self.directory.mailbox(a) for a in ("ssha@example.com", "argon2@example.com")]
        )
        self.assertEqual([c.address for c in found], ["ssha@example.com", "argon2@example.com"])

    @defer.inlineCallbacks
    def test_warm_cache_serves_until_refresh_seconds(self):
        yield self.directory.mailbox("ssha@example.com")
        self.slapd.stop()
        self.clock.advance(59)
        context = yield self.directory.mailbox("ssha@example.com")
        self.assertEqual(context.address, "ssha@example.com")
        self.clock.advance(1)
        yield self.assertFailure(self.directory.mailbox("ssha@example.com"), DirectoryUnavailable)

    @defer.inlineCallbacks
    def test_hung_directory_times_out(self):
        self.slapd.freeze()
        started = time.monotonic()
        yield self.assertFailure(self.directory.mailbox("ssha@example.com"), DirectoryUnavailable)
        self.assertLess(time.monotonic() - started, 4)
        self.slapd.thaw()
        context = yield self.directory.mailbox("ssha@example.com")
        self.assertEqual(context.address, "ssha@example.com")

    @defer.inlineCallbacks
    def test_refused_service_bind(self):
        password = os.path.join(self.data_dir, "wrong-password")
        with open(password, "w") as f:
            f.write("not-the-password\n")
        directory = self.make_directory(bind_password_file=password)
        failure = yield self.assertFailure(directory.mailbox("ssha@example.com"), DirectoryUnavailable)
        self.assertIn("service bind", str(failure))


class TlsTests(unittest.TestCase):
    """ldaps:// checks the directory's certificate against [realm] ldap_ca_file."""

    def setUp(self):
        self.slapd = Slapd(self.mktemp(), tls=True).start()
        self.addCleanup(self.slapd.remove)
        self.data_dir = os.path.abspath(self.mktemp())

    def directory(self, **realm):
        config = ldap_config(self.slapd, self.data_dir, ldap_url=self.slapd.tls_url, **realm)
        directory = started_directory(self, config, self.data_dir)
        return directory

    @defer.inlineCallbacks
    def test_trusted_certificate(self):
        directory = self.directory(ldap_ca_file=self.slapd.ca_file, ldap_auth="bind")
        context = yield directory.mailbox("ssha@example.com")
        self.assertEqual(context.address, "ssha@example.com")
        self.assertTrue((yield directory.bind("ssha@example.com", "ssha-Secret-1")))

    @defer.inlineCallbacks
    def test_untrusted_certificate_is_refused(self):
        directory = self.directory()
        failure = yield self.assertFailure(directory.mailbox("ssha@example.com"), DirectoryUnavailable)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(failure))
