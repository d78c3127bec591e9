"""
Aliases and catch-alls in the realm (docs/addressing.md): the operator's
rules, the schema upgrade of an existing database, what the sqlite
directory answers, and the CLI verbs.
"""

import json

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests import support
from trekmail.realm import database, schema, store
from trekmail.realm.directory import SqliteDirectory
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound

PASSWORD = "correct horse"


class AliasRulesTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, _ = support.realm(self)
        account = support.example(self.admin)
        self.admin.domain_add("example.org", account.id)
        for address in ("bob@example.com", "carol@example.org"):
            self.admin.mailbox_add(address, PASSWORD)
        other = self.admin.account_add("other@example.net", "starter", verified=True)
        self.admin.domain_add("other.test", other.id)
        self.admin.mailbox_add("eve@other.test", PASSWORD)

    def test_add_list_remove(self):
        alias = self.admin.alias_add("Sales@Example.com", ["alice@example.com", "carol@example.org",
                                                           "alice@example.com"])
        self.assertEqual((alias.address, alias.domain, alias.targets),
                         ("sales@example.com", "example.com", ("alice@example.com", "carol@example.org")))
        self.admin.alias_add("team@example.org", "bob@example.com, alice@example.com")
        self.assertEqual([a.address for a in self.admin.alias_list()], ["sales@example.com", "team@example.org"])
        self.assertEqual([a.address for a in self.admin.alias_list("example.org")], ["team@example.org"])
        self.admin.alias_remove("sales@example.com")
        self.assertEqual([a.address for a in self.admin.alias_list()], ["team@example.org"])
        self.assertRaises(NotFound, self.admin.alias_remove, "sales@example.com")

    def test_refusals_leave_nothing(self):
        refused = [
            (NotFound, "x@elsewhere.test", ["alice@example.com"]),
            (Duplicate, "alice@example.com", ["bob@example.com"]),
            (InvalidInput, "x@example.com", []),
            (NotFound, "x@example.com", ["nobody@example.com"]),
            (InvalidInput, "x@example.com", ["eve@other.test"]),
            (InvalidInput, "x@example.com", ["not an address"]),
            (InvalidInput, "x@example.com", ["m%d@example.com" % i for i in range(51)]),
        ]
        for error, address, targets in refused:
            self.assertRaises(error, self.admin.alias_add, address, targets)
        self.assertEqual(self.admin.alias_list(), [])
        self.admin.alias_add("x@example.com", ["alice@example.com"])
        self.assertRaises(Duplicate, self.admin.alias_add, "x@example.com", ["bob@example.com"])
        self.assertRaises(Duplicate, self.admin.mailbox_add, "x@example.com", PASSWORD)

    def test_catchall(self):
        self.assertEqual(self.admin.domain_catchall("example.com", "carol@example.org").catchall,
                         "carol@example.org")
        self.assertRaises(InvalidInput, self.admin.domain_catchall, "example.com", "eve@other.test")
        self.assertRaises(NotFound, self.admin.domain_catchall, "example.com", "nobody@example.com")
        self.assertEqual(self.admin.domain_get("example.com").catchall, "carol@example.org")
        self.assertIsNone(self.admin.domain_catchall("example.com").catchall)

    def test_rename_keeps_aliases_and_catchall(self):
        self.admin.alias_add("team@example.org", ["alice@example.com", "bob@example.com"])
        self.admin.alias_add("solo@example.org", ["bob@example.com"])
        self.admin.domain_catchall("example.org", "alice@example.com")
        self.admin.mailbox_rename("alice@example.com", "al_ice@example.org")
        self.admin.mailbox_rename("bob@example.com", "bob@example.org")
        self.assertEqual([a.targets for a in self.admin.alias_list()],
                         [("bob@example.org",), ("al_ice@example.org", "bob@example.org")])
        self.assertEqual(self.admin.domain_get("example.org").catchall, "al_ice@example.org")

    def test_domain_delete_takes_its_aliases(self):
        self.admin.alias_add("team@example.org", ["alice@example.com"])
        self.admin.domain_delete("example.org", yes=True, force=True)
        self.assertEqual(self.admin.alias_list(), [])


class UpgradeTests(unittest.TestCase):
    def test_version_one_database_upgrades(self):
        db = database.connect(":memory:")
        self.addCleanup(db.close)
        first = schema.Schema("realm", schema.REALM.migrations[:1])
        database.upgrade(db, (first,))
        db.execute("INSERT INTO accounts (owner_email, registered, plan) VALUES ('o@x.test', '2026-01-01', 'pro')")
        db.execute("INSERT INTO domains (name, account_id, created, dkim_selector, dkim_public_key)"
                   " VALUES ('x.test', 1, 0, 'dkim', '')")
        database.upgrade(db, schema.SCHEMAS)
        self.assertIsNone(store.domain_get(db, "x.test").catchall)
        self.assertEqual(store.alias_list(db), [])


class SqliteDirectoryTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_alias_answers_existing_mailboxes_only(self):
        _, admin, _ = support.realm(self)
        support.example(admin)
        admin.mailbox_add("bob@example.com", PASSWORD)
        admin.alias_add("sales@example.com", ["bob@example.com", "alice@example.com"])
        threaded = database.ThreadedDatabase(admin.db, reactor)
        threaded.start()
        self.addCleanup(threaded.stop)
        directory = SqliteDirectory(threaded)
        self.assertEqual((yield directory.alias("SALES@example.com")), ("bob@example.com", "alice@example.com"))
        self.assertIsNone((yield directory.alias("alice@example.com")))
        admin.mailbox_delete("bob@example.com", yes=True)
        self.assertEqual((yield directory.alias("sales@example.com")), ("alice@example.com",))
        admin.mailbox_delete("alice@example.com", yes=True)
        self.assertIsNone((yield directory.alias("sales@example.com")))


class CommandLineTests(support.CommandLineMixin, unittest.TestCase):
    def setUp(self):
        self.config = support.write_config(self.mktemp())
        self.ok("account", "add", "owner@example.net", "--plan", "starter", "--verified")
        self.ok("domain", "add", "example.com", "--account", "1")
        for address in ("alice@example.com", "bob@example.com"):
            self.ok("mailbox", "add", address, "--password-stdin", stdin="strong password\n")

    def test_alias_verbs(self):
        self.ok("alias", "add", "sales@example.com", "alice@example.com", "bob@example.com")
        self.ok("alias", "add", "team@example.com", "--to", "alice@example.com,bob@example.com")
        listed = json.loads(self.ok("--json", "alias", "list", "example.com"))
        self.assertEqual([(a["address"], a["targets"]) for a in listed], [
            ("sales@example.com", ["alice@example.com", "bob@example.com"]),
            ("team@example.com", ["alice@example.com", "bob@example.com"])])
        self.assertEqual(len(json.loads(self.ok("--json", "alias", "list", "--domain", "example.com"))), 2)
        self.assertIn("address: sales@example.com  domain: example.com  targets: alice@example.com,bob@example.com\n",
                      self.ok("alias", "list"))
        self.ok("alias", "remove", "team@example.com")
        self.assertEqual(self.run_cli("alias", "remove", "team@example.com")[0], 1)
        code, _, err = self.run_cli("alias", "add", "x@example.com", "nobody@example.com")
        self.assertEqual(code, 1)
        self.assertIn("no mailbox nobody@example.com", err)

    def test_catchall_verb(self):
        self.assertIn("catchall: bob@example.com", self.ok("domain", "catchall", "example.com", "bob@example.com"))
        self.assertIn("catchall: \n", self.ok("domain", "catchall", "example.com", "--off"))
        self.assertEqual(self.run_cli("domain", "catchall", "example.com")[0], 1)
        self.assertEqual(self.run_cli("domain", "catchall", "example.com", "bob@example.com", "--off")[0], 1)
