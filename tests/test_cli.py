import json
import os
import subprocess
import sys

from twisted.trial import unittest

from trekmail.config import Config
from trekmail.mailstore import maildir_path

from tests.support import REPO, CommandLineMixin, write_config


class CLITests(CommandLineMixin, unittest.TestCase):
    def setUp(self):
        self.config = write_config(self.mktemp())

    def populate(self):
        self.ok("account", "add", "owner@example.net", "--plan", "starter", "--verified")
        self.ok("domain", "add", "example.com", "--account", "1")
        self.ok("mailbox", "add", "alice@example.com", "--password-stdin", stdin="first strong pw\n")

    def test_json_output(self):
        record = json.loads(self.ok("--json", "account", "add", "o@example.net", "--plan", "pro", "--trial"))
        self.assertEqual(record["plan"], "pro")
        self.assertFalse(record["paid"])
        self.assertEqual(record["id"], 1)

    def test_full_story(self):
        self.populate()
        listed = json.loads(self.ok("--json", "mailbox", "list"))
        self.assertEqual([m["address"] for m in listed], ["alice@example.com"])
        self.assertNotIn("password_hash", listed[0])
        self.assertIn("paused: True", self.ok("mailbox", "pause", "alice@example.com"))
        self.assertIn("paused: False", self.ok("mailbox", "resume", "alice@example.com"))
        self.ok("mailbox", "passwd", "alice@example.com", "--password-stdin", stdin="second strong pw\n")
        self.assertIn("suspension: abuse", self.ok("account", "suspend", "1", "--reason", "abuse"))
        self.assertIn("suspension: \n", self.ok("account", "unsuspend", "1"))
        self.assertIn("plan: agency", self.ok("account", "set", "1", "--plan", "agency", "--paid"))
        records = json.loads(self.ok("--json", "domain", "dns", "example.com"))
        self.assertIn("dkim._domainkey.example.com", [r["name"] for r in records])
        self.assertIn("v=spf1 include:spf.example.net -all", self.ok("domain", "dns", "example.com"))

    def test_human_output_shows_times_in_iso_8601(self):
        self.ok("account", "add", "owner@example.net", "--plan", "starter", "--verified")
        shown = self.ok("domain", "add", "example.com", "--account", "1")
        created = [line for line in shown.splitlines() if line.startswith("created: ")][0]
        self.assertRegex(created, r"^created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
        self.assertIsInstance(json.loads(self.ok("--json", "domain", "list"))[0]["created"], float)

    def test_dkim_rotate_and_status(self):
        self.populate()
        shown = self.ok("domain", "dkim", "rotate", "example.com").splitlines()
        self.assertEqual(len(shown), 2)
        self.assertRegex(shown[0], r"^selector: dkim  algorithm: rsa  state: active  created: \d{4}-\d\d-\d\dT")
        self.assertRegex(shown[1], r"^selector: tm\d{8}  algorithm: rsa  state: pending  ")
        self.assertEqual(self.ok("domain", "dkim", "status", "example.com").splitlines(), shown)
        names = [r["name"] for r in json.loads(self.ok("--json", "domain", "dns", "example.com"))]
        self.assertEqual([n for n in names if "_domainkey" in n],
                         ["dkim._domainkey.example.com", shown[1].split()[1] + "._domainkey.example.com"])
        code, _, err = self.run_cli("domain", "dkim", "status", "nowhere.example")
        self.assertEqual((code, err), (1, "trekmail: no domain nowhere.example\n"))

    def test_dns_records_for_an_unreachable_hostname_say_so(self):
        self.populate()
        self.assertEqual(self.run_cli("domain", "dns", "example.com")[2], "", "mail.test is a real name")
        self.config = write_config(self.mktemp(), "[server]\nhostname = localhost\n")
        self.populate()
        code, out, err = self.run_cli("domain", "dns", "example.com")
        self.assertEqual(code, 0)
        self.assertIn("10 localhost.", out)
        self.assertIn("note: the MX record names 'localhost', which no other server can reach", err)

    def test_refusals(self):
        self.populate()
        for argv, stdin, message in [
            (("account", "add", "x@example.net", "--plan", "gold"), "", "unknown plan 'gold'"),
            (("account", "add", "owner@example.net", "--plan", "pro"), "", "already exists"),
            (("account", "set", "9", "--plan", "pro"), "", "no account with id 9"),
            (("domain", "add", "bad_domain", "--account", "1"), "", "is not a domain name"),
            (("domain", "add", "example.com", "--account", "1"), "", "already exists"),
            (("mailbox", "add", "bob@other.org", "--password-stdin"), "strong password\n", "is not hosted here"),
            (("mailbox", "add", "bob", "--password-stdin"), "strong password\n", "is not an email address"),
            (("mailbox", "add", "a/b@example.com", "--password-stdin"), "strong password\n", "cannot be a mailbox: "),
            (("mailbox", "pause", "nobody@example.com"), "", "no mailbox nobody@example.com"),
        ]:
            code, out, err = self.run_cli(*argv, stdin=stdin)
            self.assertEqual(code, 1, argv)
            self.assertEqual(out, "")
            self.assertIn(message, err)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertTrue(err.startswith("trekmail: "))

    def test_mailbox_add_accepts_only_deliverable_addresses(self):
        """C{mailbox add} and delivery (L{maildir_path}) agree on every address character."""
        self.populate()
        data_dir = Config.from_file(self.config).data_dir
        for c in "!#$&'*+/=?^_`{|}~-.":
            address = "a%sb@example.com" % (c,)
            code, out, err = self.run_cli("mailbox", "add", address, "--password-stdin", stdin="strong password\n")
            if code == 0:
                maildir_path(data_dir, address)
            else:
                self.assertRaises(ValueError, maildir_path, data_dir, address)
        listed = [m["address"] for m in json.loads(self.ok("--json", "mailbox", "list"))]
        self.assertNotIn("a/b@example.com", listed)
        self.assertIn("a.b@example.com", listed)

    def test_bad_config_is_one_line(self):
        with open(self.config, "a") as f:
            f.write("[relay]\nbogus = 1\n")
        code, out, err = self.run_cli("account", "list")
        self.assertEqual(code, 78)
        self.assertIn("bogus", err)

    def test_console_script(self):
        """The installed entry point works as an operator would call it."""
        process = subprocess.run(
            [sys.executable, "-m", "trekmail.cli", "--config", self.config, "account", "add",
             "o@example.net", "--plan", "nano"],
            capture_output=True, text=True, cwd=REPO,
        )
        self.assertEqual(process.returncode, 0, process.stderr)
        process = subprocess.run(
            [sys.executable, "-m", "trekmail.cli", "--config", self.config, "account", "add",
             "o@example.net", "--plan", "platinum"],
            capture_output=True, text=True, cwd=REPO,
        )
        self.assertEqual(process.returncode, 1)
        self.assertNotIn("Traceback", process.stderr)

    def test_reader_going_away_is_not_an_error(self):
        """`trekmail ... | head` closes the pipe early: no traceback, exit 0."""
        self.populate()
        process = subprocess.Popen(
            [sys.executable, "-m", "trekmail.cli", "--config", self.config, "domain", "dns", "example.com"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        )
        process.stdout.close()
        error = process.stderr.read()
        process.stderr.close()
        self.assertEqual(process.wait(), 0)
        self.assertNotIn(b"Traceback", error)

    def test_usage_error(self):
        process = subprocess.run(
            [sys.executable, "-m", "trekmail.cli", "--config", self.config, "account", "frobnicate"],
            capture_output=True, text=True, cwd=REPO,
        )
        self.assertEqual(process.returncode, 2)
        self.assertTrue(os.path.exists(self.config))
