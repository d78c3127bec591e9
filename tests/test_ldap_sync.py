"""
C{trekmail directory sync} against a real slapd with the sample
directory: local rows and DKIM keys for every directory domain, so that
C{trekmail domain dns} works before a domain's first login.
"""

import io
import json
import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from trekmail import cli
from trekmail.realm import dkimkeys
from tests.slapd import SUFFIX, Slapd, ldap_config, started_directory, ldap_config_text


class SyncTests(unittest.TestCase):
    def setUp(self):
        self.slapd = Slapd(self.mktemp()).start()
        self.addCleanup(self.slapd.remove)
        self.data_dir = os.path.abspath(self.mktemp())
        self.path = self.write_config()
        self.clock = Clock()
        self.clock.advance(1_800_000_000)

    def write_config(self, text=None):
        path = os.path.join(os.path.abspath(self.mktemp()) + ".ini")
        with open(path, "w") as f:
            f.write(text or ldap_config_text(self.slapd, self.data_dir))
        return path

    def run_cli(self, *argv, path=None):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--config", path or self.path, "--json"] + list(argv), stdout=out, stderr=err, clock=self.clock)
        return code, json.loads(out.getvalue()) if code == 0 else None, err.getvalue()

    def test_sync_makes_local_rows_once(self):
        code, rows, _ = self.run_cli("directory", "sync")
        self.assertEqual(code, 0)
        self.assertEqual(
            rows,
            [
                {"domain": "example.com", "account": 1, "status": "added"},
                {"domain": "example.org", "account": 2, "status": "added"},
            ],
        )
        code, records, _ = self.run_cli("domain", "dns", "example.com")
        self.assertEqual(code, 0)
        dkim = [r for r in records if r["name"] == "dkim._domainkey.example.com"]
        self.assertEqual(len(dkim), 1)
        with open(dkimkeys.key_path(self.data_dir, "example.com"), "rb") as f:
            self.assertIn(b"PRIVATE KEY", f.read())
        code, rows, _ = self.run_cli("directory", "sync")
        self.assertEqual({r["status"] for r in rows}, {"current"})
        code, again, _ = self.run_cli("domain", "dns", "example.com")
        self.assertEqual([r for r in again if r["name"] == "dkim._domainkey.example.com"], dkim)
        code, accounts, _ = self.run_cli("account", "list")
        self.assertEqual(
            [(a["id"], a["owner_email"], a["plan"], a["suspension"]) for a in accounts],
            [(1, "owner@example.com", "starter", None), (2, "owner@example.org", "nano", "billing")],
        )
        code, domain, _ = self.run_cli("domain", "show", "example.org")
        self.assertEqual(domain["created"], 1_800_000_000)

    @defer.inlineCallbacks
    def test_server_uses_what_sync_made(self):
        self.run_cli("directory", "sync")
        code, before, _ = self.run_cli("domain", "show", "example.com")
        config = ldap_config(self.slapd, self.data_dir)
        directory = started_directory(self, config, self.data_dir)
        domain, _ = yield directory.domain("example.com")
        self.assertEqual(domain.dkim_public_key, before["dkim_public_key"])
        self.assertEqual(domain.created, 1_800_000_000)

    def test_unusable_domain_is_skipped(self):
        with self.slapd.connect() as c:
            c.add(
                "associatedDomain=orphan.test,ou=domains," + SUFFIX,
                ["trekmailDomain"],
                {"associatedDomain": "orphan.test", "trekmailAccountId": "99"},
            )
        code, rows, _ = self.run_cli("directory", "sync")
        self.assertEqual(code, 0)
        orphan = [r for r in rows if r["domain"] == "orphan.test"]
        self.assertEqual(len(orphan), 1)
        self.assertTrue(orphan[0]["status"].startswith("skipped: 0 account entries"))
        self.assertEqual(len(rows), 3)

    def test_directory_down(self):
        self.slapd.stop()
        code, _, err = self.run_cli("directory", "sync")
        self.assertEqual(code, 1)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("directory unavailable", err)

    def test_sqlite_realm(self):
        path = self.write_config("[server]\ndata_dir = %s\n" % (self.data_dir,))
        code, _, err = self.run_cli("directory", "sync", path=path)
        self.assertEqual(code, 1)
        self.assertIn("backend is not ldap", err)
