"""
The admin HTTP API over a real loopback socket: bearer token, JSON in
and out, the same answers as C{trekmail --json} for the same operation
(in-process for realm verbs, a CLI subprocess for the networked ones),
and no password in any answer.
"""

import io
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests import support
from tests.provider import Provider
from tests.sending_site import CA, Site
from trekmail import settings
from trekmail import cli
from trekmail.admin import api

TOKEN = "test-token-0123456789"
SECRET = "SG.secret-key"


def http(port, method, path, body=None, token=TOKEN):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method)
    if token is not None:
        request.add_header("Authorization", "Bearer " + token)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class AdminAPITests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self, extra="[admin]\ntoken = %s\n" % (TOKEN,))
        self.port = reactor.listenTCP(0, api.site(self.site.operations, settings.admin_token(self.site.config)),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def request(self, method, path, body=None, token=TOKEN):
        return deferToThread(http, self.port.getHost().port, method, path, body, token)

    def cli(self, *argv, stdin=""):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--config", self.site.config_path, "--json"] + list(argv),
                        stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return code, (json.loads(out.getvalue()) if code == 0 else err.getvalue())

    def cli_process(self, *argv):
        command = [sys.executable, "-m", "trekmail.cli", "--config", self.site.config_path, "--json"] + list(argv)
        return deferToThread(subprocess.run, command, capture_output=True, text=True, timeout=60,
                             cwd=support.REPO)

    @inlineCallbacks
    def populate(self):
        status, account = yield self.request("POST", "/accounts", {
            "owner_email": "owner@example.net", "plan": "pro", "verified": True})
        self.assertEqual(status, 200, account)
        status, _ = yield self.request("POST", "/domains", {"domain": "example.com", "account": account["id"]})
        self.assertEqual(status, 200)
        status, mailbox = yield self.request("POST", "/mailboxes", {"address": "alice@example.com", "password": "strong password"})
        self.assertEqual(status, 200)
        self.assertNotIn("password_hash", mailbox)
        return account

    @inlineCallbacks
    def test_token_required(self):
        status, answer = yield self.request("GET", "/accounts", token=None)
        self.assertEqual(status, 401)
        status, answer = yield self.request("GET", "/accounts", token="wrong")
        self.assertEqual(status, 401)
        status, answer = yield self.request("GET", "/accounts")
        self.assertEqual((status, answer), (200, []))

    @inlineCallbacks
    def test_errors_are_json(self):
        status, answer = yield self.request("GET", "/accounts/99")
        self.assertEqual(status, 404)
        self.assertIn("no account", answer["error"])
        status, answer = yield self.request("POST", "/accounts", {"owner_email": "x", "plan": "pro"})
        self.assertEqual(status, 400)
        status, answer = yield self.request("GET", "/nothing-here")
        self.assertEqual(status, 404)
        yield self.populate()
        status, answer = yield self.request("POST", "/domains", {"domain": "example.com", "account": 1})
        self.assertEqual(status, 409)

    @inlineCallbacks
    def test_same_answers_as_cli(self):
        account = yield self.populate()
        status, profile = yield self.request("POST", "/smtp/profiles", {
            "account": account["id"], "name": "sg", "host": "smtp.sendgrid.net", "port": 587,
            "tls": "starttls", "username": "apikey", "password": SECRET})
        self.assertEqual(status, 200, profile)
        self.assertNotIn(SECRET, json.dumps(profile))
        status, routed = yield self.request("PUT", "/domains/example.com/route", {"route": "profile:%d" % profile["id"]})
        self.assertEqual(status, 200, routed)
        pairs = [
            ("/accounts/%d" % account["id"], ["account", "show", str(account["id"])]),
            ("/accounts", ["account", "list"]),
            ("/domains/example.com", ["domain", "show", "example.com"]),
            ("/domains/example.com/dns", ["domain", "dns", "example.com"]),
            ("/domains/example.com/route", ["smtp", "route", "example.com"]),
            ("/mailboxes", ["mailbox", "list"]),
            ("/smtp/profiles", ["smtp", "profile", "list"]),
            ("/smtp/profiles/%d" % profile["id"], ["smtp", "profile", "show", str(profile["id"])]),
        ]
        for path, argv in pairs:
            status, from_api = yield self.request("GET", path)
            self.assertEqual(status, 200, from_api)
            code, from_cli = self.cli(*argv)
            self.assertEqual(code, 0, from_cli)
            self.assertEqual(from_api, from_cli, path)
            self.assertNotIn(SECRET, json.dumps(from_api))

    @inlineCallbacks
    def test_aliases_and_catchall_through_api(self):
        yield self.populate()
        status, alias = yield self.request("POST", "/aliases", {"address": "sales@example.com",
                                                                "targets": ["alice@example.com"]})
        self.assertEqual((status, alias["targets"]), (200, ["alice@example.com"]), alias)
        status, listed = yield self.request("GET", "/aliases?domain=example.com")
        self.assertEqual(listed, self.cli("alias", "list", "example.com")[1])
        status, answer = yield self.request("POST", "/aliases", {"address": "x@example.com", "targets": 5})
        self.assertEqual(status, 400, answer)
        status, domain = yield self.request("PUT", "/domains/example.com/catchall", {"mailbox": "alice@example.com"})
        self.assertEqual((status, domain["catchall"]), (200, "alice@example.com"), domain)
        status, domain = yield self.request("PUT", "/domains/example.com/catchall", {"mailbox": None})
        self.assertIsNone(domain["catchall"])
        status, _ = yield self.request("DELETE", "/aliases/sales@example.com")
        self.assertEqual((status, (yield self.request("GET", "/aliases"))[1]), (200, []))

    @inlineCallbacks
    def test_apply_all_refused_without_yes_through_api(self):
        account = yield self.populate()
        status, profile = yield self.request("POST", "/smtp/profiles", {
            "account": account["id"], "name": "sg", "host": "smtp.sendgrid.net", "port": 587,
            "tls": "starttls", "username": "apikey", "password": SECRET})
        route = {"route": "profile:%d" % profile["id"], "apply_all": True}
        status, answer = yield self.request("PUT", "/domains/example.com/route", route)
        self.assertEqual(status, 400)
        self.assertIn("--yes", answer["error"])
        status, answer = yield self.request("PUT", "/domains/example.com/route", dict(route, yes=True))
        self.assertEqual((status, answer["route"]), (200, route["route"]))

    @inlineCallbacks
    def test_lifecycle_verbs_through_api_need_yes(self):
        """Each one done (not refused) has the server close the gone mailboxes' sessions: C{gone} counts."""
        gone = []
        self.site.operations.mailboxes_gone = lambda: gone.append(len(gone) + 1)
        account = yield self.populate()
        status, answer = yield self.request("DELETE", "/mailboxes/alice@example.com")
        self.assertEqual(status, 400)
        self.assertIn("yes=true", answer["error"])
        self.assertEqual(gone, [])
        status, answer = yield self.request("POST", "/mailboxes/alice@example.com/rename", {"address": "al@example.com"})
        self.assertEqual((status, answer["address"], gone), (200, "al@example.com", [1]))
        status, answer = yield self.request("DELETE", "/domains/example.com?yes=1")
        self.assertEqual(status, 400)
        self.assertIn("--force", answer["error"])
        status, answer = yield self.request("DELETE", "/mailboxes/al@example.com", {"yes": True})
        self.assertEqual((status, answer["deleted"], gone), (200, "al@example.com", [1, 2]))
        status, answer = yield self.request("DELETE", "/domains/example.com?yes=1")
        self.assertEqual((status, answer["deleted"], gone), (200, "example.com", [1, 2, 3]))
        status, answer = yield self.request("DELETE", "/accounts/%d" % account["id"])
        self.assertEqual(status, 400)
        status, answer = yield self.request("DELETE", "/accounts/%d?yes=true" % account["id"])
        self.assertEqual((status, answer["deleted"], gone), (200, account["id"], [1, 2, 3, 4]))
        status, answer = yield self.request("GET", "/accounts")
        self.assertEqual((status, answer), (200, []))

    @inlineCallbacks
    def test_a_failure_closing_sessions_does_not_undo_the_answer(self):
        def broken():
            raise OSError("no such process")
        self.site.operations.mailboxes_gone = broken
        yield self.populate()
        status, answer = yield self.request("DELETE", "/mailboxes/alice@example.com?yes=1")
        self.assertEqual((status, answer["deleted"]), (200, "alice@example.com"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    @inlineCallbacks
    def test_oversized_or_malformed_body(self):
        status, answer = yield self.request("POST", "/accounts", {"owner_email": "x" * (api.MAX_BODY + 10)})
        self.assertEqual(status, 413)
        status, answer = yield self.request("POST", "/accounts", ["not", "an", "object"])
        self.assertEqual(status, 400)
        status, answer = yield self.request("DELETE", "/accounts")
        self.assertEqual(status, 404)
        self.assertIn("not allowed", answer["error"])

    @inlineCallbacks
    def test_deep_json_and_huge_ids_are_bad_input(self):
        yield self.populate()
        for depth in (33, 30000):
            status, answer = yield self.request("POST", "/accounts", b'{"plan": ' + b"[" * depth + b"]" * depth + b"}")
            self.assertEqual(status, 400, answer)
            self.assertIn("nests deeper", answer["error"])
        status, answer = yield self.request("POST", "/accounts", b'{"plan": ' + b"9" * 5000 + b"}")
        self.assertEqual(status, 400, answer)
        huge = "9" * 30
        for method, path, body in [("GET", "/accounts/" + huge, None), ("PATCH", "/accounts/" + huge, {}),
                                   ("POST", "/accounts/%s/suspend" % huge, {"reason": "billing"}),
                                   ("GET", "/smtp/profiles/" + huge, None), ("GET", "/accounts/9223372036854775808", None),
                                   ("POST", "/domains", {"domain": "b.example", "account": 10**30}),
                                   ("GET", "/domains?account=" + huge, None),
                                   ("GET", "/mailboxes/alice@example.com/doctor?recipients=" + huge, None),
                                   ("POST", "/mailboxes/alice@example.com/doctor", {"recipients": "many"})]:
            status, answer = yield self.request(method, path, body)
            self.assertEqual(status, 400, (path, answer))
            self.assertLess(len(answer["error"]), 200)
        status, answer = yield self.request("GET", "/accounts/9223372036854775807")
        self.assertEqual(status, 404, answer)

    @inlineCallbacks
    def test_verify_and_doctor_match_the_cli(self):
        yield self.populate()
        status, records = yield self.request("GET", "/domains/example.com/dns")
        self.site.publish(records)
        status, from_api = yield self.request("POST", "/domains/example.com/verify")
        self.assertEqual((status, from_api["status"]), (200, "active"), from_api)
        done = yield self.cli_process("domain", "verify", "example.com")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout), from_api)
        status, from_api = yield self.request("GET", "/mailboxes/alice@example.com/doctor?recipients=2")
        self.assertEqual((status, from_api["result"]), (200, "all clear"), from_api)
        done = yield self.cli_process("doctor", "alice@example.com", "--recipients", "2")
        self.assertEqual(json.loads(done.stdout), from_api)

    @inlineCallbacks
    def test_dkim_rotation_through_api_and_cli(self):
        """docs/dkim.md: rotate, status, and C{domain verify} switching signing once DNS shows the new key."""
        yield self.populate()
        status, records = yield self.request("GET", "/domains/example.com/dns")
        self.site.publish(records)
        status, rotated = yield self.request("POST", "/domains/example.com/dkim/rotate")
        self.assertEqual(status, 200, rotated)
        self.assertEqual([s["state"] for s in rotated], ["active", "pending"])
        new = rotated[1]["selector"]
        status, from_api = yield self.request("GET", "/domains/example.com/dkim")
        self.assertEqual((status, from_api), (200, rotated))
        self.assertEqual(self.cli("domain", "dkim", "status", "example.com"), (0, from_api))

        status, verified = yield self.request("POST", "/domains/example.com/verify")
        self.assertEqual((verified["status"], verified["dkim_selectors"]), ("active", []), verified)
        [waiting] = [r for r in verified["records"] if r["name"] == new + "._domainkey.example.com"]
        self.assertEqual(waiting["status"], "warn")
        self.assertIn("publish TXT %s._domainkey.example.com" % new, waiting["fix"])

        status, records = yield self.request("GET", "/domains/example.com/dns")
        self.site.publish([r for r in records if r["name"].startswith(new)])
        status, verified = yield self.request("POST", "/domains/example.com/verify")
        self.assertEqual(verified["dkim_selectors"], [{"selector": new, "state": "active"},
                                                      {"selector": "dkim", "state": "retiring"}], verified)
        self.assertTrue(all(r["status"] == "ok" for r in verified["records"]), verified)
        status, domain = yield self.request("GET", "/domains/example.com")
        self.assertEqual(domain["dkim_selector"], new)

    @inlineCallbacks
    def test_profile_test_through_api_and_cli(self):
        account = yield self.populate()
        provider = Provider(CA, mode="starttls")
        port = yield provider.listen(reactor)
        self.addCleanup(provider.stop)
        status, good = yield self.request("POST", "/smtp/profiles", {
            "account": account["id"], "name": "good", "host": "127.0.0.1", "port": port,
            "tls": "starttls", "username": "apikey", "password": SECRET})
        status, bad = yield self.request("POST", "/smtp/profiles", {
            "account": account["id"], "name": "bad", "host": "127.0.0.1", "port": port,
            "tls": "starttls", "username": "apikey", "password": "wrong"})
        status, answer = yield self.request("POST", "/smtp/profiles/%d/test" % good["id"], {"to": "probe@example.org"})
        self.assertEqual((status, answer["ok"]), (200, True), answer)
        self.assertEqual(provider.recipients, ["probe@example.org"])
        self.assertIn(b"Subject: TrekMail SMTP profile test", provider.messages[0])
        status, answer = yield self.request("POST", "/smtp/profiles/%d/test" % bad["id"], {})
        self.assertEqual((answer["ok"], answer["code"]), (False, 535))
        done = yield self.cli_process("smtp", "profile", "test", str(bad["id"]))
        self.assertEqual(done.returncode, 1, done.stderr)
        from_cli = json.loads(done.stdout)
        self.assertEqual((from_cli["ok"], from_cli["code"], from_cli["reply"]), (False, 535, answer["reply"]))
        self.assertNotIn("wrong", from_cli["reply"])


class TokenFileTests(unittest.TestCase):
    def test_generated_once_mode_0600(self):
        config, admin, clock = support.realm(self)
        token = settings.admin_token(config)
        path = config.data_path("admin.token")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertGreaterEqual(len(token), 32)
        self.assertEqual(settings.admin_token(config), token)
