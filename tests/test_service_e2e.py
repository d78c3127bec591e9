"""
The whole server as an operator runs it: a real C{twistd -n trekmail}
with every listener configured, reached over real sockets.
"""

import base64
import http.client
import imaplib
import smtplib
import socket
import subprocess
import sys

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.server_process import ServerProcess, free_port
from tests.support import REPO, client_context, write_config

DOORS = ("submissions", "submission", "mx", "imaps", "imap", "admin", "https")
IMPLICIT_TLS = ("submissions", "imaps")


def _greeting(port, implicit_tls):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if not implicit_tls:
            return raw.recv(512), None
        with client_context().wrap_socket(raw) as tls:
            return tls.recv(512), tls.version()


class RunningServerTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.ports = {name: free_port() for name in DOORS}
        self.config = write_config(
            self.mktemp(), **{name: "tcp:%d:interface=127.0.0.1" % port for name, port in self.ports.items()}
        )
        self.cli("account", "add", "owner@example.net", "--plan", "starter", "--verified")
        self.cli("domain", "add", "example.com", "--account", "1")
        self.cli("mailbox", "add", "alice@example.com", "--password-stdin", stdin="first password\n")
        self.server = ServerProcess(self, self.config)
        yield self.server.start(self.ports.values())

    def cli(self, *argv, stdin=""):
        done = subprocess.run(
            [sys.executable, "-m", "trekmail.cli", "--config", self.config] + list(argv),
            input=stdin, capture_output=True, text=True, cwd=REPO,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    @defer.inlineCallbacks
    def test_every_door_answers(self):
        for name in ("submissions", "submission", "mx"):
            greeting, version = yield threads.deferToThread(_greeting, self.ports[name], name in IMPLICIT_TLS)
            self.assertTrue(greeting.startswith(b"220 "), (name, greeting))
        for name in ("imaps", "imap"):
            greeting, version = yield threads.deferToThread(_greeting, self.ports[name], name in IMPLICIT_TLS)
            self.assertTrue(greeting.startswith(b"* OK"), (name, greeting))
        for name in IMPLICIT_TLS:
            greeting, version = yield threads.deferToThread(_greeting, self.ports[name], True)
            self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        status = yield threads.deferToThread(self._admin_status)
        self.assertEqual(status, 401)
        dav = yield threads.deferToThread(self._dav_answers)
        self.assertEqual(dav, [(301, "/dav/"), (401, None), (207, None)])

    def _dav_answers(self):
        """The well-known redirect, then /dav/ without and with the mailbox password, over TLS."""
        answers = []
        for path, headers in (("/.well-known/caldav", {}), ("/dav/", {}),
                              ("/dav/", {"Authorization": "Basic " + base64.b64encode(
                                  b"alice@example.com:first password").decode()})):
            connection = http.client.HTTPSConnection("127.0.0.1", self.ports["https"], timeout=10,
                                                     context=client_context())
            try:
                connection.request("PROPFIND", path, headers=dict(headers, Depth="0"))
                response = connection.getresponse()
                answers.append((response.status, response.getheader("Location")))
            finally:
                connection.close()
        return answers

    def _admin_status(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.ports["admin"], timeout=10)
        connection.request("GET", "/accounts")
        return connection.getresponse().status

    def _smtp_login(self, password):
        with smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"], context=client_context(), timeout=10) as s:
            try:
                s.login("alice@example.com", password)
                return 235
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    def _imap_login(self, password):
        client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=client_context(), timeout=10)
        try:
            client.login("alice@example.com", password)
            return "OK"
        except imaplib.IMAP4.error:
            return "NO"
        finally:
            client.shutdown()

    @defer.inlineCallbacks
    def test_cli_changes_reach_the_running_server(self):
        self.assertEqual((yield threads.deferToThread(self._smtp_login, "first password")), 235)
        self.cli("mailbox", "passwd", "alice@example.com", "--password-stdin", stdin="second password\n")
        self.assertEqual((yield threads.deferToThread(self._smtp_login, "first password")), 535)
        self.assertEqual((yield threads.deferToThread(self._smtp_login, "second password")), 235)
        self.assertEqual((yield threads.deferToThread(self._imap_login, "second password")), "OK")
        self.cli("mailbox", "pause", "alice@example.com")
        self.assertEqual((yield threads.deferToThread(self._smtp_login, "second password")), 535)
        self.assertEqual((yield threads.deferToThread(self._imap_login, "second password")), "OK")
