"""
Deleting and renaming a mailbox against the whole service in this
process (real IMAPS, HTTPS and admin API on loopback) while the
C{trekmail} CLI runs as a process of its own, as an operator's would:
the live IMAP session of a mailbox the admin API deleted or renamed is
closed at once, one the CLI deleted within the re-check interval, and a
renamed mailbox logs in under its new address with its old mail and
calendars.
"""

import email
import imaplib
import subprocess
import sys
import time
import uuid

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.support import REPO, client_context
from tests.test_admin_api import TOKEN, http
from tests.test_dav import EVENT, PASSWORD, Server
from trekmail.imap import sessions
from trekmail.realm.retention import RetentionPurge

MESSAGE = b"From: bob@example.com\r\nTo: alice@example.com\r\nSubject: before the change\r\n\r\nstill here\r\n"


def closed(client):
    """How C{client}'s session ends: the line the server sent, the seconds it took, and what a NOOP then meets."""
    started = time.monotonic()
    line = client.readline()
    waited = time.monotonic() - started
    try:
        client.noop()
        after = "still open"
    except (imaplib.IMAP4.abort, OSError) as e:
        after = "closed: %s" % (type(e).__name__,)
    return line, waited, after


def rechecks(top):
    """The L{sessions.MailboxRecheck} services anywhere under C{top}."""
    if isinstance(top, sessions.MailboxRecheck):
        return [top]
    return [found for child in getattr(top, "services", ()) for found in rechecks(child)]


class LifecycleEndToEndTests(unittest.TestCase):
    def setUp(self):
        self.server = Server(self, admin_token=TOKEN)

    def cli(self, *argv):
        return subprocess.run([sys.executable, "-m", "trekmail.cli", "--config", self.server.config.path] + list(argv),
                              capture_output=True, text=True, timeout=60, cwd=REPO)

    def imap(self, user="alice@example.com"):
        client = imaplib.IMAP4_SSL("127.0.0.1", self.server.ports["imaps"], ssl_context=client_context(), timeout=5)
        client.login(user, PASSWORD)
        return client

    @defer.inlineCallbacks
    def test_deleted_mailbox_session_is_closed(self):
        def work():
            watching = self.imap()
            watching.append("INBOX", None, None, MESSAGE)
            watching.select("INBOX")
            other = self.imap("bob@example.com")
            other.select("INBOX")
            refused = self.cli("mailbox", "delete", "alice@example.com")
            deleted = self.cli("mailbox", "delete", "alice@example.com", "--yes")
            line, waited, after = closed(watching)
            bob = other.noop()[0]
            other.logout()
            try:
                self.imap()
                login = "logged in"
            except imaplib.IMAP4.error as e:
                login = str(e)
            return refused, deleted, line, waited, after, bob, login

        refused, deleted, line, waited, after, bob, login = yield threads.deferToThread(work)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("repeat with --yes", refused.stderr)
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        self.assertEqual(line, b"* BYE This mailbox no longer exists\r\n")
        self.assertLess(waited, sessions.RECHECK_INTERVAL + 1, "the CLI's deletion is seen at the next re-check")
        self.assertTrue(after.startswith("closed"), after)
        self.assertEqual(bob, "OK")
        self.assertIn("AUTHENTICATIONFAILED", login)
        purges = [s for s in self.server.service if isinstance(s, RetentionPurge)]
        self.assertEqual([(p.data_dir, p.retention_seconds, p.running) for p in purges],
                         [(self.server.config.data_dir, 30 * 86400, True)])

    @defer.inlineCallbacks
    def test_admin_api_closes_sessions_at_once(self):
        """The periodic re-check is stopped: only the API's own call can close them."""
        (recheck,) = rechecks(self.server.service)
        recheck.stopService()
        port = self.server.ports["admin"]

        def work():
            alice, bob = self.imap(), self.imap("bob@example.com")
            for client in (alice, bob):
                client.select("INBOX")
            deleted = http(port, "DELETE", "/mailboxes/alice@example.com?yes=1")
            alice_closed = closed(alice)
            renamed = http(port, "POST", "/mailboxes/bob@example.com/rename", {"address": "robert@example.com"})
            bob_closed = closed(bob)
            robert = self.imap("robert@example.com")
            robert.logout()
            return deleted, alice_closed, renamed, bob_closed

        deleted, alice_closed, renamed, bob_closed = yield threads.deferToThread(work)
        self.assertEqual(deleted[0], 200, deleted)
        self.assertEqual(renamed[0], 200, renamed)
        for line, waited, after in (alice_closed, bob_closed):
            self.assertEqual(line, b"* BYE This mailbox no longer exists\r\n")
            self.assertLess(waited, 1)
            self.assertTrue(after.startswith("closed"), after)

    @defer.inlineCallbacks
    def test_renamed_mailbox_logs_in_with_its_old_mail_and_calendar(self):
        def before():
            client = self.imap()
            client.append("INBOX", None, None, MESSAGE)
            client.logout()
            with self.server.client() as dav:
                dav.principal().make_calendar(name="Work").save_event(EVENT.format(uid=uuid.uuid4()))

        def after():
            client = self.imap("alicia@example.com")
            client.select("INBOX")
            _, data = client.fetch("1:*", "(RFC822)")
            client.logout()
            subjects = [email.message_from_bytes(part[1])["Subject"] for part in data if isinstance(part, tuple)]
            with self.server.client("alicia@example.com") as dav:
                calendars = [(c.get_display_name(), [e.icalendar_component["SUMMARY"] for e in c.events()])
                             for c in dav.principal().calendars()]
            try:
                self.imap()
                old = "logged in"
            except imaplib.IMAP4.error as e:
                old = str(e)
            return subjects, calendars, old

        yield threads.deferToThread(before)
        renamed = yield threads.deferToThread(self.cli, "mailbox", "rename", "alice@example.com", "alicia@example.com")
        self.assertEqual(renamed.returncode, 0, renamed.stderr)
        subjects, calendars, old = yield threads.deferToThread(after)
        self.assertEqual(subjects, ["before the change"])
        self.assertEqual(calendars, [("Work", ["Planning meeting"])])
        self.assertIn("AUTHENTICATIONFAILED", old)
