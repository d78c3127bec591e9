"""
docs/sending-rules.md ("SMTP profiles", "Routes") in the realm: SMTP profiles with their password sealed
at rest, per-domain routes, the account default, apply-to-all, and what
deleting a profile does.
"""

import io
import json
import os
import stat

from twisted.trial import unittest

from tests import support
from trekmail import cli
from trekmail.crypto import SecretKeyError, SecretKeyring
from trekmail.realm import routes, store
from trekmail.realm.errors import InvalidInput, NotFound
from trekmail.realm.profiles import ProfileAdministration

SECRET = "SG.very-secret-api-key"


def setup(testcase, plan="starter"):
    config, admin, clock = support.realm(testcase)
    account = support.example(admin, plan=plan)
    admin.domain_add("example.org", account.id)
    return config, admin, ProfileAdministration(admin.db, clock, SecretKeyring.load(config.secret_key_path)), account


def add(profiles, account, name="sendgrid", password=SECRET, **fields):
    values = dict(host="smtp.sendgrid.net", port=587, tls="starttls", username="apikey")
    values.update(fields)
    return profiles.profile_add(account.id, name, password=password, **values)


def route_of(admin, name):
    domain, account = store.domain_context(admin.db, name)
    return str(routes.resolve_route(domain, account))


class SecretsAtRestTests(unittest.TestCase):
    def test_password_never_stored_or_listed_in_clear(self):
        config, admin, profiles, account = setup(self)
        profile = add(profiles, account)
        self.assertNotIn(SECRET, repr(profile))
        self.assertNotIn(SECRET, repr(profiles.profile_list()))
        admin.db.execute("PRAGMA wal_checkpoint(FULL)")
        dump = "\n".join(admin.db.iterdump())
        self.assertIn("smtp.sendgrid.net", dump)
        self.assertNotIn(SECRET, dump)
        for name in os.listdir(os.path.dirname(config.database_path)):
            path = os.path.join(os.path.dirname(config.database_path), name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    self.assertNotIn(SECRET.encode(), f.read(), path)
        self.assertEqual(profiles.profile_login(profile.id).password, SECRET)
        self.assertNotIn(SECRET, repr(profiles.profile_login(profile.id)))

    def test_key_file_outside_database_mode_0600(self):
        config, admin, profiles, account = setup(self)
        add(profiles, account)
        path = config.secret_key_path
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertNotEqual(os.path.abspath(path), os.path.abspath(config.database_path))

    def test_open_key_file_refused(self):
        config, admin, profiles, account = setup(self)
        add(profiles, account)
        os.chmod(config.secret_key_path, 0o644)
        self.assertRaises(SecretKeyError, SecretKeyring.load, config.secret_key_path)

    def test_sealed_value_bound_to_its_row(self):
        config, admin, profiles, account = setup(self)
        first = add(profiles, account)
        second = add(profiles, account, name="other", password="other-secret")
        sealed = admin.db.execute("SELECT password_sealed FROM smtp_profiles WHERE id = ?", (first.id,)).fetchone()[0]
        admin.db.execute("UPDATE smtp_profiles SET password_sealed = ? WHERE id = ?", (sealed, second.id))
        self.assertRaises(SecretKeyError, profiles.profile_login, second.id)

    def test_rotation_reseals_every_profile(self):
        config, admin, profiles, account = setup(self)
        first = add(profiles, account)
        second = add(profiles, account, name="ses", password="ses-secret", host="email-smtp.eu-west-1.amazonaws.com")
        before = dict(admin.db.execute("SELECT id, password_sealed FROM smtp_profiles"))
        old_id = SecretKeyring.load(config.secret_key_path).current_id
        answer = profiles.key_rotate()
        self.assertEqual(answer["profiles_resealed"], 2)
        after = dict(admin.db.execute("SELECT id, password_sealed FROM smtp_profiles"))
        for profile_id in before:
            self.assertNotEqual(before[profile_id], after[profile_id])
            self.assertIn(":%s:" % (answer["key_id"],), after[profile_id])
        with open(config.secret_key_path) as f:
            self.assertNotIn(old_id, f.read())
        self.assertEqual(stat.S_IMODE(os.stat(config.secret_key_path).st_mode), 0o600)
        fresh = ProfileAdministration(admin.db, None, SecretKeyring.load(config.secret_key_path))
        self.assertEqual(fresh.profile_login(first.id).password, SECRET)
        self.assertEqual(fresh.profile_login(second.id).password, "ses-secret")

    def test_interrupted_rotation_loses_nothing(self):
        config, admin, profiles, account = setup(self)
        profile = add(profiles, account)
        SecretKeyring.load(config.secret_key_path).begin_rotation()
        fresh = ProfileAdministration(admin.db, None, SecretKeyring.load(config.secret_key_path))
        self.assertEqual(fresh.profile_login(profile.id).password, SECRET)
        fresh.key_rotate()
        self.assertEqual(ProfileAdministration(admin.db, None, SecretKeyring.load(config.secret_key_path)).profile_login(profile.id).password, SECRET)

    def test_running_server_follows_a_rotation(self):
        config, admin, profiles, account = setup(self)
        profile = add(profiles, account)
        ProfileAdministration(admin.db, None, SecretKeyring.load(config.secret_key_path)).key_rotate()
        self.assertEqual(profiles.profile_login(profile.id).password, SECRET)

    def test_input_checks(self):
        config, admin, profiles, account = setup(self)
        for fields in (dict(tls="ssl"), dict(port=0), dict(host="bad host"), dict(password=""),
                       dict(password="a\r\nMAIL FROM:<x>")):
            self.assertRaises(InvalidInput, add, profiles, account, **fields)
        add(profiles, account)
        self.assertRaises(Exception, add, profiles, account)

    def test_known_provider_spf_include(self):
        config, admin, profiles, account = setup(self)
        self.assertEqual(add(profiles, account).spf_include, "sendgrid.net")
        ses = add(profiles, account, name="ses", host="email-smtp.us-east-1.amazonaws.com")
        self.assertEqual(ses.spf_include, "amazonses.com")


class RouteTests(unittest.TestCase):
    def test_baselines(self):
        config, admin, profiles, account = setup(self)
        self.assertEqual(route_of(admin, "example.com"), "managed")
        nano = admin.account_add("nano@example.net", "nano", verified=True)
        admin.domain_add("nano.example", nano.id)
        self.assertEqual(route_of(admin, "nano.example"), "unconfigured")
        domain, account = store.domain_context(admin.db, "nano.example")
        self.assertIn("pick one", routes.refusal(routes.resolve_route(domain, account), "nano"))

    def test_route_to_profile_and_back(self):
        config, admin, profiles, account = setup(self)
        profile = add(profiles, account)
        answer = profiles.route_set("example.com", profile.route)
        self.assertEqual(answer["route"], "profile:%d" % profile.id)
        self.assertEqual(route_of(admin, "example.org"), "managed")
        profiles.route_set("example.com", "managed")
        self.assertEqual(route_of(admin, "example.com"), "managed")

    def test_foreign_or_missing_profile_refused(self):
        config, admin, profiles, account = setup(self)
        other = admin.account_add("other@example.net", "pro", verified=True)
        foreign = add(profiles, other)
        self.assertRaises(NotFound, profiles.route_set, "example.com", foreign.route)
        self.assertRaises(NotFound, profiles.route_set, "example.com", "profile:999")
        self.assertRaises(InvalidInput, profiles.route_set, "example.com", "smtp.example.net")

    def test_new_profile_created_and_assigned_in_one_step(self):
        config, admin, profiles, account = setup(self)
        answer = profiles.route_new("example.com", "mailgun", "smtp.mailgun.org", 587, "starttls",
                                    "postmaster@example.com", "mg-secret")
        self.assertEqual(answer["route"], answer["profile"].route)
        self.assertEqual(route_of(admin, "example.com"), answer["profile"].route)

    def test_make_default_applies_to_new_domains_only(self):
        config, admin, profiles, account = setup(self)
        profile = add(profiles, account)
        profiles.route_set("example.com", profile.route, make_default=True)
        self.assertEqual(route_of(admin, "example.org"), "managed")
        admin.domain_add("example.net", account.id)
        self.assertEqual(route_of(admin, "example.net"), profile.route)
        self.assertEqual(store.account_get(admin.db, account.id).default_route, profile.route)

    def test_apply_all_needs_yes(self):
        config, admin, profiles, account = setup(self)
        profile = add(profiles, account)
        with self.assertRaises(InvalidInput) as caught:
            profiles.route_set("example.com", profile.route, apply_all=True)
        self.assertIn("--yes", str(caught.exception))
        self.assertEqual(route_of(admin, "example.com"), "managed")
        profiles.route_set("example.com", profile.route, apply_all=True, yes=True)
        self.assertEqual(route_of(admin, "example.com"), profile.route)
        self.assertEqual(route_of(admin, "example.org"), profile.route)

    def test_nano_cannot_choose_managed(self):
        config, admin, profiles, account = setup(self, plan="nano")
        self.assertRaises(InvalidInput, profiles.route_set, "example.com", "managed")


class DeletionTests(unittest.TestCase):
    def test_default_falls_back_and_domains_move(self):
        config, admin, profiles, account = setup(self)
        keep = add(profiles, account, name="keep")
        gone = add(profiles, account, name="gone")
        profiles.route_set("example.com", gone.route, make_default=True)
        profiles.route_set("example.org", keep.route)
        answer = profiles.profile_delete(gone.id)
        self.assertEqual(answer["domains_moved"], ["example.com"])
        self.assertIsNone(store.account_get(admin.db, account.id).default_route)
        self.assertEqual(route_of(admin, "example.com"), "managed")
        self.assertEqual(route_of(admin, "example.org"), keep.route)
        self.assertRaises(NotFound, profiles.profile_get, gone.id)

    def test_domains_on_deleted_profile_follow_the_remaining_default(self):
        config, admin, profiles, account = setup(self)
        keep = add(profiles, account, name="keep")
        gone = add(profiles, account, name="gone")
        profiles.route_set("example.org", keep.route, make_default=True)
        profiles.route_set("example.com", gone.route)
        profiles.profile_delete(gone.id)
        self.assertEqual(route_of(admin, "example.com"), keep.route)

    def test_no_domain_ever_points_at_a_missing_profile(self):
        config, admin, profiles, account = setup(self)
        for index in range(3):
            profile = add(profiles, account, name="p%d" % index)
            profiles.route_set("example.com", profile.route, make_default=True, apply_all=True, yes=True)
        for profile in profiles.profile_list(account.id):
            profiles.profile_delete(profile.id)
            existing = {p.route for p in profiles.profile_list()}
            for row in admin.db.execute("SELECT route FROM domains UNION SELECT default_route FROM accounts"):
                if row[0] and row[0].startswith("profile:"):
                    self.assertIn(row[0], existing)

    def test_last_profile_puts_paid_account_back_on_managed(self):
        config, admin, profiles, account = setup(self)
        profile = add(profiles, account)
        profiles.route_set("example.com", profile.route, make_default=True, apply_all=True, yes=True)
        answer = profiles.profile_delete(profile.id)
        self.assertEqual(answer["moved_to"], "managed")
        self.assertIsNone(answer["paused"])
        self.assertEqual(route_of(admin, "example.com"), "managed")
        self.assertEqual(route_of(admin, "example.org"), "managed")

    def test_last_profile_on_nano_pauses_until_a_profile_is_added(self):
        config, admin, profiles, account = setup(self, plan="nano")
        profile = add(profiles, account)
        profiles.route_set("example.com", profile.route, apply_all=True, yes=True)
        answer = profiles.profile_delete(profile.id)
        self.assertIn("paused", answer["paused"])
        domain, account_now = store.domain_context(admin.db, "example.com")
        text = routes.refusal(routes.resolve_route(domain, account_now), "nano")
        self.assertIn("Nano plan does not include managed sending", text)
        fresh = add(profiles, account, name="again")
        self.assertEqual(route_of(admin, "example.com"), fresh.route)
        self.assertEqual(route_of(admin, "example.org"), fresh.route)

    def test_upgrade_resumes_a_paused_nano_account(self):
        config, admin, profiles, account = setup(self, plan="nano")
        profile = add(profiles, account)
        profiles.route_set("example.com", profile.route)
        profiles.profile_delete(profile.id)
        admin.account_set(account.id, plan="starter")
        domain, account_now = store.domain_context(admin.db, "example.com")
        self.assertIsNone(routes.refusal(routes.resolve_route(domain, account_now), "starter"))


class CommandLineTests(unittest.TestCase):
    def run_cli(self, config_path, *argv, stdin=""):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--config", config_path, "--json"] + list(argv),
                        stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_profile_and_route_verbs(self):
        path = support.write_config(self.mktemp())
        code, out, err = self.run_cli(path, "account", "add", "owner@example.net", "--plan", "pro", "--verified")
        self.assertEqual(code, 0, err)
        self.run_cli(path, "domain", "add", "example.com", "--account", "1")
        self.run_cli(path, "domain", "add", "example.org", "--account", "1")
        code, out, err = self.run_cli(
            path, "smtp", "profile", "add", "--account", "1", "--name", "sg", "--host", "smtp.sendgrid.net",
            "--port", "587", "--tls", "starttls", "--username", "apikey", "--password-stdin", stdin=SECRET + "\n")
        self.assertEqual(code, 0, err)
        self.assertNotIn(SECRET, out)
        profile_id = json.loads(out)["id"]
        code, out, err = self.run_cli(path, "smtp", "profile", "list")
        self.assertNotIn(SECRET, out)
        self.assertNotIn("password", out)
        code, out, err = self.run_cli(path, "smtp", "route", "example.com", "profile:%d" % profile_id, "--apply-all")
        self.assertEqual(code, 1)
        self.assertIn("--yes", err)
        code, out, err = self.run_cli(path, "smtp", "route", "example.com", "profile:%d" % profile_id,
                                      "--apply-all", "--yes")
        self.assertEqual(code, 0, err)
        code, out, err = self.run_cli(path, "smtp", "route", "example.org")
        self.assertEqual(json.loads(out)["route"], "profile:%d" % profile_id)
        code, out, err = self.run_cli(
            path, "smtp", "route", "example.org", "new", "--name", "mg", "--host", "smtp.mailgun.org",
            "--port", "587", "--tls", "starttls", "--username", "postmaster@example.org", "--password-stdin",
            stdin="mg-secret\n")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["profile"]["name"], "mg")
        code, out, err = self.run_cli(path, "smtp", "profile", "rotate-key")
        self.assertEqual((code, json.loads(out)["profiles_resealed"]), (0, 2))
        code, out, err = self.run_cli(path, "smtp", "profile", "delete", str(profile_id))
        self.assertEqual(json.loads(out)["domains_moved"], ["example.com"])
