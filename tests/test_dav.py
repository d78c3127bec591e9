"""
CalDAV and CardDAV at /dav/: the whole service in this process, real
HTTPS on loopback, the caldav client library from PyPI, a real sqlite
realm; and the login door on its own, with a task.Clock for the throttle.
"""

import base64
import functools
import http.client
import imaplib
import logging
import os
import socket
import threading
import urllib.parse
import uuid

import caldav
from radicale.app.propfind import ApplicationPartPropfind
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, reactor, task, threads
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from tests.server_process import free_port
from tests.support import NOON, client_context, write_config
from trekmail.config import Config
from trekmail.dav.auth import Door, LoginRefused, Logins, LoginThrottled
from trekmail.dav.site import radicale_application
from trekmail.policy.logins import LoginGuard
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.service import make_service
from trekmail import settings

PASSWORD = "correct horse"

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//TrekMail tests//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20261121T120000Z
DTSTART:20261124T090000Z
DTEND:20261124T100000Z
SUMMARY:Planning meeting
END:VEVENT
END:VCALENDAR
"""

CONTACT = """BEGIN:VCARD
VERSION:3.0
UID:{uid}
FN:Bob Example
EMAIL:bob@example.com
END:VCARD
"""

ADDRESS_BOOK = b"""<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
  <D:set><D:prop>
    <D:resourcetype><D:collection/><C:addressbook/></D:resourcetype>
    <D:displayname>Contacts</D:displayname>
  </D:prop></D:set>
</D:mkcol>
"""


class Server:
    """
    The twistd service of a config with https and imaps listeners, alice
    and bob in one account; with C{admin_token}, the admin API too.
    """

    def __init__(self, testcase, admin_token=None):
        self.ports = {"https": free_port(), "imaps": free_port()}
        extra = "[dns]\nnameservers = 127.0.0.1:9\n[dav]\nmax_body = 65536\n"
        if admin_token is not None:
            self.ports["admin"] = free_port()
            extra += "[admin]\ntoken = %s\n" % (admin_token,)
        path = write_config(testcase.mktemp(), extra, **{
            name: "tcp:%d:interface=127.0.0.1" % port for name, port in self.ports.items()})
        self.config = Config.from_file(path)
        db = database.connect(self.config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        clock = Clock()
        clock.advance(NOON)
        admin = Administration(db, settings.realm(self.config), clock)
        record = admin.account_add("owner@example.net", "starter", verified=True)
        admin.domain_add("example.com", record.id)
        for local in ("alice", "bob"):
            admin.mailbox_add("%s@example.com" % local, PASSWORD)
        db.close()
        self.service = make_service(self.config, reactor)
        self.service.privilegedStartService()
        self.service.startService()
        # after the listeners stop, a turn or two for the clients' closed connections to be seen
        testcase.addCleanup(lambda: task.deferLater(reactor, 0.2, lambda: None))
        testcase.addCleanup(self.service.stopService)

    def url(self, path="/dav/"):
        return "https://127.0.0.1:%d%s" % (self.ports["https"], path)

    def client(self, user="alice@example.com", password=PASSWORD, path="/dav/"):
        return caldav.DAVClient(url=self.url(path), username=user, password=password, ssl_verify_cert=False)

    def status(self, path, user="alice@example.com", password=PASSWORD, method="PROPFIND", body=b"", headers=None):
        """The status of one request, over a connection of its own."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.ports["https"], timeout=10,
                                                 context=client_context())
        credentials = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        try:
            connection.request(method, urllib.parse.urlsplit(path).path, body=body,
                               headers=dict(headers or {"Depth": "0"}, Authorization="Basic " + credentials))
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


class DavTests(unittest.TestCase):
    def setUp(self):
        self.server = Server(self)

    def in_thread(self, function, *args):
        return threads.deferToThread(function, *args)

    @defer.inlineCallbacks
    def test_calendar_and_contacts_found_through_discovery(self):
        def work():
            with self.server.client() as client:
                return use(client)

        def use(client):
            calendar = client.principal().make_calendar(name="Work")
            calendar.save_event(EVENT.format(uid=uuid.uuid4()))
            home = str(client.principal().url)
            book = home + "contacts/"
            assert client.mkcol(book, ADDRESS_BOOK).status == 201
            assert client.put(book + "bob.vcf", CONTACT.format(uid=uuid.uuid4()),
                              {"Content-Type": "text/vcard; charset=utf-8"}).status == 201
            found = {}
            for name in ("caldav", "carddav"):
                with self.server.client(path="/.well-known/%s" % name) as discovering:
                    principal = discovering.principal()
                    found[name] = str(principal.url)
                    if name == "caldav":
                        found["calendars"] = [
                            (c.get_display_name(), [e.icalendar_component["SUMMARY"] for e in c.events()])
                            for c in principal.calendars()]
                    else:
                        found["home listing"] = discovering.propfind(str(principal.url), depth=1).raw
                        found["book listing"] = discovering.propfind(str(principal.url) + "contacts/", depth=1).raw
                        found["contact"] = discovering.request(str(principal.url) + "contacts/bob.vcf").raw
            return home, found

        home, found = yield self.in_thread(work)
        self.assertTrue(urllib.parse.unquote(home).endswith("/dav/alice@example.com/"), home)
        self.assertEqual(found["caldav"], home)
        self.assertEqual(found["carddav"], home)
        self.assertEqual(found["calendars"], [("Work", ["Planning meeting"])])
        self.assertIn("contacts/", found["home listing"])
        self.assertIn("addressbook", found["home listing"])
        self.assertIn("bob.vcf", found["book listing"])
        self.assertIn("FN:Bob Example", found["contact"])

    @defer.inlineCallbacks
    def test_well_known_is_a_permanent_redirect(self):
        def ask(name):
            connection = http.client.HTTPSConnection("127.0.0.1", self.server.ports["https"], timeout=10,
                                                     context=client_context())
            try:
                connection.request("PROPFIND", "/.well-known/%s" % name, headers={"Depth": "0"})
                response = connection.getresponse()
                return response.status, response.getheader("Location")
            finally:
                connection.close()

        for name in ("caldav", "carddav"):
            self.assertEqual((yield self.in_thread(ask, name)), (301, "/dav/"))

    @defer.inlineCallbacks
    def test_wrong_password_and_bare_local_part_get_401(self):
        def work():
            return [self.server.status("/dav/", user, password)
                    for user, password in (("alice@example.com", "wrong"), ("alice", PASSWORD),
                                           ("nobody@example.com", PASSWORD), ("alice@example.com", PASSWORD))]

        self.assertEqual((yield self.in_thread(work)), [401, 401, 401, 207])

    @defer.inlineCallbacks
    def test_another_mailbox_cannot_read_or_write(self):
        def work():
            with self.server.client() as alice:
                calendar = alice.principal().make_calendar(name="Private")
                calendar.save_event(EVENT.format(uid=uuid.uuid4()))
                target = str(calendar.url)
            bob = functools.partial(self.server.status, user="bob@example.com")
            return (bob(target), bob(target, method="GET"), bob(target, method="REPORT"),
                    bob(target + "x.ics", method="PUT", body=EVENT.format(uid=uuid.uuid4()).encode(),
                        headers={"Content-Type": "text/calendar"}),
                    bob("/dav/alice@example.com/", method="DELETE"), self.server.status(target))

        self.assertEqual((yield self.in_thread(work)), (403, 403, 403, 403, 403, 207))

    @defer.inlineCallbacks
    def test_plain_http_is_not_served(self):
        def work():
            with socket.create_connection(("127.0.0.1", self.server.ports["https"]), timeout=10) as raw:
                raw.sendall(b"GET /dav/ HTTP/1.1\r\nHost: x\r\n\r\n")
                received = b""
                try:
                    while True:
                        chunk = raw.recv(4096)
                        if not chunk:
                            break
                        received += chunk
                except OSError:
                    pass
                return received

        self.assertNotIn(b"HTTP/1.1", (yield self.in_thread(work)))

    @defer.inlineCallbacks
    def test_oversized_bodies_are_refused_before_they_are_stored(self):
        credentials = base64.b64encode(b"alice@example.com:" + PASSWORD.encode())

        def send(head, body_chunks):
            raw = socket.create_connection(("127.0.0.1", self.server.ports["https"]), timeout=10)
            with client_context().wrap_socket(raw) as tls:
                tls.sendall(head)
                try:
                    for chunk in body_chunks:
                        tls.sendall(chunk)
                except OSError:
                    pass
                try:
                    return tls.recv(4096)
                except OSError:
                    return b""

        announced = yield self.in_thread(send, b"PUT /dav/alice@example.com/big.ics HTTP/1.1\r\nHost: x\r\n"
                                         b"Authorization: Basic " + credentials + b"\r\n"
                                         b"Content-Length: 2147483648\r\n\r\n", [b"x" * 1024])
        self.assertTrue(announced.startswith(b"HTTP/1.1 413 "), announced)
        chunked = yield self.in_thread(send, b"PUT /dav/alice@example.com/big.ics HTTP/1.1\r\nHost: x\r\n"
                                       b"Authorization: Basic " + credentials + b"\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n",
                                       [b"4000\r\n" + b"x" * 0x4000 + b"\r\n"] * 8 + [b"0\r\n\r\n"])
        self.assertTrue(chunked.startswith(b"HTTP/1.1 413 "), chunked)
        collections = os.path.join(self.server.config.data_dir, "dav", "collections")
        stored = [name for _, _, names in os.walk(collections) for name in names if name.startswith("big")]
        self.assertEqual(stored, [])

    @defer.inlineCallbacks
    def test_imap_answers_while_a_propfind_is_in_progress(self):
        """Radicale runs on the WSGI pool: a PROPFIND held inside it must not stop the reactor."""
        entered, release = threading.Event(), threading.Event()
        original = ApplicationPartPropfind.do_PROPFIND

        def held(application, *args, **kwargs):
            entered.set()
            release.wait(30)
            return original(application, *args, **kwargs)

        self.patch(ApplicationPartPropfind, "do_PROPFIND", held)
        self.addCleanup(release.set)

        def noop():
            assert entered.wait(30)
            client = imaplib.IMAP4_SSL("127.0.0.1", self.server.ports["imaps"], ssl_context=client_context(),
                                       timeout=5)
            try:
                client.login("alice@example.com", PASSWORD)
                client.select("INBOX")
                answer = client.noop()
                still_held = not release.is_set()
                client.logout()
                return answer, still_held
            finally:
                release.set()

        propfind = self.in_thread(self.server.status, "/dav/alice@example.com/")
        (kind, _), still_held = yield self.in_thread(noop)
        self.assertEqual(kind, "OK")
        self.assertTrue(still_held)
        self.assertEqual((yield propfind), 207)


class FakeChecker:
    def __init__(self):
        self.outage = False

    def requestAvatarId(self, credentials):
        if self.outage:
            return defer.fail(DirectoryUnavailable("down"))
        if credentials.password == PASSWORD.encode() and b"@" in credentials.username:
            return defer.succeed(credentials.username.decode().lower())
        return defer.fail(UnauthorizedLogin())


class LoginTests(unittest.TestCase):
    """The throttle of SMTP AUTH, on a task.Clock."""

    def setUp(self):
        self.clock = Clock()
        self.checker = FakeChecker()
        self.logins = Logins(self.checker, LoginGuard(self.clock))

    def attempt(self, password, client="192.0.2.1"):
        results = []
        self.logins.login("alice@example.com", password, client).addBoth(results.append)
        return results

    def test_failures_are_held_then_refused(self):
        for _ in range(3):
            self.assertIsInstance(self.attempt("wrong")[0].value, LoginRefused)
        held = self.attempt("wrong")
        self.assertEqual(held, [])
        self.clock.advance(1)
        self.assertIsInstance(held[0].value, LoginRefused)
        for _ in range(6):
            self.clock.advance(8)
            self.attempt("wrong")
        self.clock.advance(8)
        self.assertIsInstance(self.attempt(PASSWORD)[0].value, LoginThrottled)
        self.assertEqual(self.attempt(PASSWORD, "192.0.2.2"), ["alice@example.com"])

    def test_outage_is_not_a_wrong_password(self):
        self.checker.outage = True
        self.assertIsInstance(self.attempt(PASSWORD)[0].value, DirectoryUnavailable)


class DoorTests(unittest.TestCase):
    """The WSGI door's own answers, called from a thread as twisted.web's WSGI pool does."""

    def setUp(self):
        self.checker = FakeChecker()
        self.seen = []

        def application(environ, start_response):
            self.seen.append(environ.get("trekmail.dav.address"))
            start_response("207 Multi-Status", [])
            return [b""]

        self.door = Door(application, Logins(self.checker, LoginGuard(reactor)), reactor)

    def call(self, authorization=None, **environ):
        if authorization is not None:
            environ["HTTP_AUTHORIZATION"] = authorization
        environ.setdefault("REMOTE_ADDR", "192.0.2.9")
        statuses = []
        return threads.deferToThread(
            lambda: (b"".join(self.door(environ, lambda status, headers: statuses.append(status))), statuses[0])[1])

    def basic(self, user, password):
        return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()

    @defer.inlineCallbacks
    def test_answers(self):
        self.assertEqual((yield self.call(self.basic("alice@example.com", PASSWORD))), "207 Multi-Status")
        self.assertEqual((yield self.call(self.basic("alice@example.com", "wrong"))), "401 Unauthorized")
        self.assertEqual((yield self.call("Basic !!!")), "400 Bad Request")
        self.assertEqual((yield self.call(None, **{"trekmail.dav.address": "bob@example.com"})), "207 Multi-Status")
        self.checker.outage = True
        self.assertEqual((yield self.call(self.basic("alice@example.com", PASSWORD))), "503 Service Unavailable")
        self.assertEqual(self.seen, ["alice@example.com", None])

    @defer.inlineCallbacks
    def test_throttled_client_gets_429(self):
        class Throttled:
            def login(self, username, password, client):
                return defer.fail(LoginThrottled())

        self.door = Door(self.door._application, Throttled(), reactor)
        self.assertEqual((yield self.call(self.basic("alice@example.com", PASSWORD))), "429 Too Many Requests")



class RadicaleLogTests(unittest.TestCase):
    def test_warnings_reach_twisted_logger(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        radicale_application(self.mktemp())
        logging.getLogger("radicale").warning("storage %s is slow", "x")
        logging.getLogger("radicale").info("a request")
        mine = [(e["log_level"], formatEvent(e)) for e in events if e.get("log_namespace") == "radicale"]
        self.assertIn((LogLevel.warn, "storage x is slow"), mine)
        self.assertNotIn("a request", [text for _, text in mine])
