"""
Submission end to end: smtplib over real TLS on both listeners, through
the rows of docs/reply-codes.md and the sending gate of docs/sending-rules.md.
"""

import datetime
import smtplib
import socket

from twisted.internet import defer
from twisted.trial import unittest

from tests.smtp_site import PASSWORD, Site, client_context, message, send
from trekmail.policy import counters
from trekmail.smtp.submission import CONTEXT_SECONDS

BOTH = ("submissions", "submission")


class LoginTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()
        self.site.admin.mailbox_add("paused@example.com", PASSWORD)
        self.site.admin.mailbox_pause("paused@example.com")

    def attempt(self, port, username, password):
        def run():
            client = self.site.connect(port)
            try:
                client.auth("PLAIN", lambda challenge=None: "\0%s\0%s" % (username, password))
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code, e.smtp_error.decode()
            finally:
                client.close()
            return 235, ""

        return self.site.in_thread(run)

    @defer.inlineCallbacks
    def test_success_on_both_listeners(self):
        for port in BOTH:
            self.assertEqual((yield self.attempt(port, "alice@example.com", PASSWORD))[0], 235)

    @defer.inlineCallbacks
    def test_failures_are_535_578(self):
        cases = [
            ("alice@example.com", "wrong"),
            ("nobody@example.com", PASSWORD),
            ("paused@example.com", PASSWORD),
            ("alice", PASSWORD),
        ]
        for port in BOTH:
            for username, password in cases:
                code, text = yield self.attempt(port, username, password)
                self.assertEqual((code, text[:5]), (535, "5.7.8"), (port, username))

    @defer.inlineCallbacks
    def test_login_mechanism(self):
        def run():
            client = self.site.connect("submission")
            client.user, client.password = "alice@example.com", PASSWORD
            try:
                return client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            finally:
                client.close()

        code, _ = yield self.site.in_thread(run)
        self.assertEqual(code, 235)

    @defer.inlineCallbacks
    def test_auth_before_tls(self):
        def run():
            client = smtplib.SMTP("127.0.0.1", self.site.ports["submission"], timeout=30)
            try:
                client.ehlo("client.test")
                advertised = client.has_extn("auth"), client.has_extn("starttls")
                return advertised, client.docmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHg="), client.mail("alice@example.com")
            finally:
                client.close()

        advertised, auth, mail = yield self.site.in_thread(run)
        self.assertEqual(advertised, (False, True))
        self.assertEqual((auth[0], auth[1][:6]), (538, b"5.7.11"))
        self.assertEqual((mail[0], mail[1][:5]), (530, b"5.7.0"))

    @defer.inlineCallbacks
    def test_extensions_after_tls(self):
        def run():
            client = self.site.connect("submissions")
            try:
                return client.esmtp_features
            finally:
                client.close()

        features = yield self.site.in_thread(run)
        self.assertEqual(features["auth"].split(), ["PLAIN", "LOGIN"])
        self.assertEqual(features["size"], "26214400")
        for name in ("enhancedstatuscodes", "pipelining", "8bitmime"):
            self.assertIn(name, features)
        self.assertNotIn("starttls", features)

    @defer.inlineCallbacks
    def test_mail_without_auth(self):
        def run():
            client = self.site.connect("submissions")
            try:
                return client.mail("alice@example.com")
            finally:
                client.close()

        code, text = yield self.site.in_thread(run)
        self.assertEqual((code, text[:5]), (530, b"5.7.0"))


class STARTTLSInjectionTests(unittest.TestCase):
    """CVE-2011-0411: plaintext pipelined after STARTTLS must not run inside TLS."""

    def setUp(self):
        self.site = Site(self)
        self.site.account()

    @defer.inlineCallbacks
    def test_pipelined_plaintext_discarded(self):
        def run():
            sock = socket.create_connection(("127.0.0.1", self.site.ports["submission"]), timeout=30)
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"EHLO client.test\r\n")
            while reader.readline()[3:4] == b"-":
                pass
            sock.sendall(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<alice@example.com>\r\n")
            ready = reader.readline()
            wrapped = client_context().wrap_socket(sock, server_hostname="mail.test")
            wrapped.sendall(b"EHLO again.test\r\n")
            secure = wrapped.makefile("rb")
            first = secure.readline()
            wrapped.close()
            return ready, first

        ready, first = yield self.site.in_thread(run)
        self.assertEqual(ready, b"220 2.0.0 ready to start TLS\r\n")
        self.assertEqual(first, b"250-mail.test Hello 127.0.0.1, nice to meet you\r\n")


class GateTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)

    def submit(self, port="submissions", sender="alice@example.com", data=None, recipients=("bob@remote.test",)):
        def run():
            client = self.site.connect(port, login="alice@example.com")
            try:
                return send(client, sender, recipients, data)
            finally:
                client.close()

        return self.site.in_thread(run)

    @defer.inlineCallbacks
    def assert_refused(self, code, status, text=None, **kwargs):
        for port in BOTH:
            replies = yield self.submit(port, **kwargs)
            last_code, last_text = replies[-1]
            self.assertEqual((last_code, last_text[:len(status)]), (code, status), (port, replies))
            if text is not None:
                self.assertIn(text, last_text)
        self.assertEqual(self.site.queue.messages, [])

    @defer.inlineCallbacks
    def test_accepted_on_both_listeners(self):
        self.site.account()
        for port in BOTH:
            replies = yield self.submit(port, recipients=("bob@remote.test", "carol@remote.test"))
            self.assertEqual([c for c, _ in replies], [250, 250, 250, 354, 250])
            self.assertTrue(replies[-1][1].startswith("2.0.0 OK: queued as Q"))
        envelope, data = self.site.queue.messages[0]
        self.assertEqual(envelope.sender, "alice@example.com")
        self.assertEqual(envelope.recipients, ("bob@remote.test", "carol@remote.test"))
        self.assertEqual((envelope.origin, envelope.authenticated_as), ("submission", "alice@example.com"))
        self.assertEqual(envelope.received_at, self.site.clock.seconds())
        added, original = data.split(b">\r\n", 1)
        self.assertEqual(original, message("alice@example.com", ("bob@remote.test", "carol@remote.test")))
        self.assertRegex(added, rb"^Date: .*\r\nMessage-ID: <[0-9a-f]{32}@mail\.test$")

    def test_envelope_sender_not_mailbox(self):
        self.site.account(mailboxes=("alice", "bob"))
        return self.assert_refused(550, "5.7.1", "sender unauthorised", sender="bob@example.com")

    def test_null_sender_refused(self):
        self.site.account()
        return self.assert_refused(550, "5.7.1", sender="")

    def test_header_from_not_mailbox(self):
        self.site.account(mailboxes=("alice", "bob"))
        return self.assert_refused(550, "5.7.1", "From header", data=message("bob@example.com"))

    def test_two_from_headers(self):
        self.site.account()
        data = message("alice@example.com", extra="From: bob@example.com\r\n")
        return self.assert_refused(550, "5.7.1", "exactly one From", data=data)

    def test_nano_on_managed_route(self):
        self.site.account(plan="nano")
        return self.assert_refused(554, "5.7.7", "SMTP profile")

    def test_nano_managed_explicitly(self):
        record = self.site.account(plan="nano")
        self.site.admin.db.execute("UPDATE accounts SET default_route = 'managed' WHERE id = ?", (record.id,))
        return self.assert_refused(554, "5.7.7", "Nano")

    @defer.inlineCallbacks
    def test_suspensions(self):
        record = self.site.account()
        banners = {
            "billing": "There is a billing issue with your account.",
            "deliverability": "too many of your recent messages were rejected",
            "abuse": "Your account is temporarily restricted.",
        }
        for reason, banner in banners.items():
            self.site.admin.account_suspend(record.id, reason)
            yield self.assert_refused(554, "5.7.7", banner)

    @defer.inlineCallbacks
    def test_session_sees_a_suspension_within_context_seconds(self):
        record = self.site.account()
        client = yield self.site.in_thread(self.site.connect, login="alice@example.com")
        self.addCleanup(client.close)
        first = yield self.site.in_thread(send, client, "alice@example.com")
        self.site.admin.account_suspend(record.id, "abuse")
        self.site.clock.advance(CONTEXT_SECONDS - 1)
        cached = yield self.site.in_thread(send, client, "alice@example.com")
        self.site.clock.advance(1)
        refused = yield self.site.in_thread(send, client, "alice@example.com")
        self.assertEqual((first[-1][0], cached[-1][0]), (250, 250))
        self.assertEqual(refused[0][0], 554)
        self.assertIn("temporarily restricted", refused[0][1])
        other = yield self.submit()
        self.assertEqual(other[0][0], 554)

    @defer.inlineCallbacks
    def test_unverified_owner_past_grace(self):
        now = datetime.datetime.fromtimestamp(self.site.clock.seconds(), datetime.timezone.utc).date()
        self.site.account(verified=False, registered=(now - datetime.timedelta(days=7)).isoformat())
        yield self.assert_refused(554, "5.7.7", "please verify your email")

    @defer.inlineCallbacks
    def test_unverified_owner_in_grace_and_grandfathered(self):
        now = datetime.datetime.fromtimestamp(self.site.clock.seconds(), datetime.timezone.utc).date()
        self.site.account(verified=False, registered=(now - datetime.timedelta(days=6)).isoformat())
        self.site.account(owner="old@example.net", domain="old.example", verified=False, registered="2026-02-18")
        replies = yield self.submit()
        self.assertEqual(replies[-1][0], 250)

    @defer.inlineCallbacks
    def test_too_many_recipients_refuses_whole_message(self):
        self.site.account(trial=True)
        recipients = ["r%d@remote.test" % i for i in range(11)]
        for port in BOTH:
            replies = yield self.submit(port, recipients=recipients)
            self.assertEqual([c for c, _ in replies], [250] + [250] * 10 + [550, 550], port)
            self.assertTrue(replies[-1][1].startswith("5.5.3 too many recipients: this plan allows 10"))
        self.assertEqual(self.site.queue.messages, [])

    @defer.inlineCallbacks
    def test_over_size(self):
        self.site.account()

        def run():
            client = self.site.connect("submission", login="alice@example.com")
            try:
                return client.mail("alice@example.com", ["SIZE=26214401"])
            finally:
                client.close()

        code, text = yield self.site.in_thread(run)
        self.assertEqual((code, text[:5]), (552, b"5.2.3"))

    @defer.inlineCallbacks
    def test_queue_failure_gives_count_back(self):
        record = self.site.account()
        self.site.queue.fail = True
        replies = yield self.submit()
        self.assertEqual(replies[-1], (451, "4.3.0 could not store the message, please try again"))
        counts = yield self.site.database.run(
            counters.counts, "alice@example.com", record.id, self.site.clock.seconds()
        )
        self.assertEqual(counts.mailbox_day, 0)

    @defer.inlineCallbacks
    def test_pipelined_transaction_over_tls(self):
        self.site.account(mailboxes=("alice", "bob"))

        def run():
            client = self.site.connect("submissions", login="alice@example.com")
            try:
                client.send(b"MAIL FROM:<bob@example.com>\r\nRCPT TO:<x@remote.test>\r\nRSET\r\n"
                            b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\nRCPT TO:<x@remote.test>\r\n"
                            b"RCPT TO:<\"q\"@remote.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\n")
                replies = [client.getreply()[0] for _ in range(8)]
                client.send(message("alice@example.com", body="caf\u00e9\r\n") + b".\r\nNOOP\r\n")
                return replies + [client.getreply()[0], client.getreply()[0]]
            finally:
                client.close()

        replies = yield self.site.in_thread(run)
        self.assertEqual(replies, [550, 503, 250, 250, 250, 553, 250, 354, 250, 250])
        envelope, data = self.site.queue.messages[0]
        self.assertEqual(envelope.recipients, ("x@remote.test", "y@remote.test"))
        self.assertTrue(data.endswith(b"caf\xc3\xa9\r\n"))

    @defer.inlineCallbacks
    def test_smtplib_sendmail(self):
        self.site.account()

        def run():
            client = self.site.connect("submission", login="alice@example.com")
            try:
                return client.sendmail("alice@example.com", ["bob@remote.test"], message("alice@example.com"))
            finally:
                client.quit()

        self.assertEqual((yield self.site.in_thread(run)), {})
        self.assertEqual(len(self.site.queue.messages), 1)
