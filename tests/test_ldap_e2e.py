"""
The whole server (C{twistd -n trekmail}) with C{[realm] backend = ldap}
against a real slapd loaded with the shipped LDIF: directory users log in
over SMTP submission (465 implicit TLS, 587 STARTTLS) and IMAPS with
smtplib and imaplib, in every password scheme; filter injection logs in
nowhere; stopping slapd gives C{454 4.7.0} and C{NO [UNAVAILABLE]}, and
logins work again once it is back (CalDAV too: 503, then 207).
"""

import base64
import http.client
import imaplib
import os
import smtplib
import socket

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from tests.server_process import ServerProcess, free_port, run_twistd
from tests.slapd import SAMPLE_PASSWORDS, SERVICE_DN, SERVICE_PASSWORD, SUFFIX, Slapd
from tests.support import client_context

INJECTIONS = ("*", "*)(uid=*", "*@example.com", "*)(mail=*))(|(mail=*@example.com", "ssha*@example.com")


def smtp_login(port, address, password, source="127.0.0.1", starttls=False):
    """C{(code, text)} of AUTH PLAIN over TLS; blocking."""
    if starttls:
        client = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30)
        client.starttls(context=client_context())
    else:
        client = smtplib.SMTP_SSL("127.0.0.1", port, context=client_context(), source_address=(source, 0), timeout=30)
    try:
        client.ehlo("client.test")
        try:
            code, text = client.auth("PLAIN", lambda challenge=None: "\0%s\0%s" % (address, password))
        except smtplib.SMTPAuthenticationError as e:
            code, text = e.smtp_code, e.smtp_error
        return code, text.decode()
    finally:
        client.close()


class _IMAP4FromSource(imaplib.IMAP4_SSL):
    """imaplib connecting from a chosen loopback address (the failed-login throttle counts per client address)."""

    def __init__(self, *args, source, **kwargs):
        self.source = source
        super().__init__(*args, **kwargs)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap_login(port, address, password, source="127.0.0.1"):
    """C{("OK" | "NO", text)} of LOGIN over implicit TLS; blocking."""
    client = _IMAP4FromSource("127.0.0.1", port, ssl_context=client_context(), timeout=30, source=source)
    try:
        quoted = '"%s"' % (address.replace("\\", "\\\\").replace('"', '\\"'),)
        kind, data = client.login(quoted, password)
        return kind, data[0].decode()
    except imaplib.IMAP4.error as e:
        return "NO", str(e)
    finally:
        client.logout()


def dav_status(port, address, password):
    """The status of a PROPFIND of /dav/ with Basic credentials over HTTPS; blocking."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=client_context())
    credentials = base64.b64encode(("%s:%s" % (address, password)).encode()).decode()
    try:
        connection.request("PROPFIND", "/dav/", headers={"Depth": "0", "Authorization": "Basic " + credentials})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class LdapServerMixin:
    auth = None

    @defer.inlineCallbacks
    def setUp(self):
        self.slapd = Slapd(self.mktemp()).start()
        self.addCleanup(self.slapd.remove)
        directory = os.path.abspath(self.mktemp())
        data = os.path.join(directory, "var")
        os.makedirs(data)
        password_file = os.path.join(directory, "ldap-password")
        with open(password_file, "w") as f:
            f.write(SERVICE_PASSWORD + "\n")
        self.ports = {name: free_port() for name in ("submissions", "submission", "imaps", "https")}
        lines = [
            "[server]",
            "hostname = mail.test",
            "data_dir = %s" % (data,),
            "[tls]",
            "certificate = %s" % os.path.join(data, "tls", "cert.pem"),
            "private_key = %s" % os.path.join(data, "tls", "key.pem"),
            # Nothing here resolves names; a loopback resolver keeps the system's out of it.
            "[dns]",
            "nameservers = 127.0.0.1:%d" % (free_port(),),
            "[listen]",
        ]
        lines += ["%s = tcp:%d:interface=127.0.0.1" % item for item in sorted(self.ports.items())]
        lines += [
            "[realm]",
            "backend = ldap",
            "password_scrypt_n = 1024",
            "ldap_url = %s" % (self.slapd.url,),
            "bind_dn = %s" % (SERVICE_DN,),
            "bind_password_file = %s" % (password_file,),
            "base_dn = %s" % (SUFFIX,),
            "ldap_auth = %s" % (self.auth,),
            "ldap_timeout = 2",
        ]
        path = os.path.join(directory, "trekmail.ini")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.server = ServerProcess(self, path)
        yield self.server.start(self.ports.values())

    def in_thread(self, function, *args, **kwargs):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), function, *args, **kwargs)

    def smtp(self, address, password, **kwargs):
        port = self.ports["submission" if kwargs.get("starttls") else "submissions"]
        return self.in_thread(smtp_login, port, address, password, **kwargs)

    def imap(self, address, password, **kwargs):
        return self.in_thread(imap_login, self.ports["imaps"], address, password, **kwargs)

    def dav(self, address, password):
        return self.in_thread(dav_status, self.ports["https"], address, password)

    @defer.inlineCallbacks
    def test_every_scheme_logs_in(self):
        """A paused mailbox reads mail but may not submit (docs/reply-codes.md: 535 5.7.8)."""
        for address, password in sorted(SAMPLE_PASSWORDS.items()):
            code, text = yield self.smtp(address, password)
            self.assertEqual(code, 535 if address.startswith("paused@") else 235, (address, text))
            kind, text = yield self.imap(address, password)
            self.assertEqual(kind, "OK", (address, text))
        code, _ = yield self.smtp("yescrypt@example.com", SAMPLE_PASSWORDS["yescrypt@example.com"], starttls=True)
        self.assertEqual(code, 235)

    @defer.inlineCallbacks
    def test_wrong_password_and_injection_fail(self):
        """Each attempt from its own address: the failed-login delays (L{trekmail.policy.throttle}) are not waited out."""
        attempts = [("argon2@example.com", "wrong")] + [(name, "*") for name in INJECTIONS]
        for number, (address, password) in enumerate(attempts):
            code, text = yield self.smtp(address, password, source="127.0.3.%d" % (number + 1,))
            self.assertEqual((code, text[:5]), (535, "5.7.8"), address)
            kind, text = yield self.imap(address, password, source="127.0.4.%d" % (number + 1,))
            self.assertEqual(kind, "NO", address)
            self.assertIn("AUTHENTICATIONFAILED", text)

    @defer.inlineCallbacks
    def test_directory_outage_is_temporary(self):
        self.slapd.stop()
        address, password = "sha512crypt@example.com", SAMPLE_PASSWORDS["sha512crypt@example.com"]
        code, text = yield self.smtp(address, password)
        self.assertEqual((code, text[:5]), (454, "4.7.0"))
        code, text = yield self.smtp(address, "wrong")
        self.assertEqual((code, text[:5]), (454, "4.7.0"))
        kind, text = yield self.imap(address, password)
        self.assertEqual(kind, "NO")
        self.assertIn("[UNAVAILABLE]", text)
        self.assertEqual((yield self.dav(address, password)), 503)
        self.slapd.start()
        code, text = yield self.smtp(address, password)
        self.assertEqual(code, 235, text)
        kind, text = yield self.imap(address, password)
        self.assertEqual(kind, "OK", text)
        self.assertEqual((yield self.dav(address, password)), 207)
        self.assertEqual((yield self.dav(address, "wrong")), 401)


class BindModeTests(LdapServerMixin, unittest.TestCase):
    auth = "bind"

    @defer.inlineCallbacks
    def test_outage_after_login(self):
        """Binds are not cached: a mailbox that just logged in gets a temporary failure too."""
        address, password = "ssha@example.com", SAMPLE_PASSWORDS["ssha@example.com"]
        self.assertEqual((yield self.smtp(address, password))[0], 235)
        self.slapd.stop()
        self.assertEqual((yield self.smtp(address, password))[0], 454)
        kind, text = yield self.imap(address, password)
        self.assertIn("[UNAVAILABLE]", text)


class CompareModeTests(LdapServerMixin, unittest.TestCase):
    auth = "compare"


class RefusedLdapConfigurationTests(unittest.TestCase):
    def test_bad_filter_stops_startup_naming_the_key(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(
                "[server]\ndata_dir = %s\n[realm]\nbackend = ldap\nbase_dn = %s\n"
                "ldap_mailbox_filter = (mail=%%s\n" % (os.path.abspath(self.mktemp()), SUFFIX)
            )
        process = run_twistd(path)
        output = process.stdout + process.stderr
        self.assertNotEqual(process.returncode, 0)
        self.assertNotIn("Traceback", output)
        self.assertIn("[realm] ldap_mailbox_filter: not a valid LDAP filter", output)
