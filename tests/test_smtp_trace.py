"""
What the doors add to and check on a message at the end of DATA: the
Received: field (RFC 5321 section 4.4, RFC 3848 keywords) on the MX and
both submission listeners, the refusal of a malformed header block
(550 5.6.0), and the Date and Message-ID that submission adds
(RFC 6409 section 8).
"""

import re
from datetime import datetime, timezone
from email.utils import format_datetime

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from tests.smtp_site import Site, message, send
from trekmail.smtp import headercheck, trace
from trekmail.smtp.mx import MXFactory

NOW = 1795262400.0
DATE = "Sat, 21 Nov 2026 12:00:00 +0000"


def mx_session(tls=True):
    queue = FakeQueue()
    clock = Clock()
    clock.advance(NOW)
    directory = FakeDirectory(["example.com"], ["bob@example.com", "carol@example.com"])
    server = MXFactory(
        directory=directory,
        queue=queue,
        clock=clock,
        hostname="mx.test",
        tls_options=object() if tls else None,
    ).buildProtocol(None)
    transport = TLSStringTransport()
    server.makeConnection(transport)
    replies(transport)
    return server, transport, queue


def unfolded(field):
    return field.replace(b"\r\n\t", b" ")


class ReceivedFieldTests(unittest.TestCase):
    def test_protocol_keywords(self):
        self.assertEqual(
            [trace.protocol(e, t, a) for e, t, a in
             [(False, False, False), (True, False, False), (True, True, False), (True, False, True), (True, True, True)]],
            ["SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"],
        )

    def test_field(self):
        field = trace.received(b"client.example", "192.0.2.1", b"mx.test", "ESMTPS", "Q1", ("bob@example.com",), NOW)
        self.assertEqual(field, (
            "Received: from client.example ([192.0.2.1])\r\n"
            "\tby mx.test (TrekMail) with ESMTPS id Q1\r\n"
            "\tfor <bob@example.com>; %s\r\n" % (DATE,)).encode())

    def test_several_recipients_are_not_named(self):
        field = trace.received(b"c.example", "192.0.2.1", b"mx.test", "ESMTP", "Q1", ("a@x.test", "b@x.test"), NOW)
        self.assertNotIn(b"for", field)
        self.assertTrue(unfolded(field).endswith(b"id Q1; " + DATE.encode() + b"\r\n"))

    def test_address_literals(self):
        field = trace.received(b"[192.0.2.7]", "2001:db8::1", b"mx.test", "ESMTP", "Q1", (), NOW)
        self.assertTrue(field.startswith(b"Received: from [192.0.2.7] ([IPv6:2001:db8::1])\r\n"))
        field = trace.received(b"[IPv6:2001:DB8::2]", "::ffff:192.0.2.1", b"mx.test", "ESMTP", "Q1", (), NOW)
        self.assertTrue(field.startswith(b"Received: from [IPv6:2001:db8::2] ([192.0.2.1])\r\n"))

    def test_helo_that_is_not_a_name_goes_into_a_comment(self):
        for helo in (b"a\rX-Injected: yes", b"x) by evil.test (", b"two words", b"\x00\x1b[31m", b"-bad-.test",
                     b"a..b", b"x" * 300, b"[not an address]", b""):
            field = trace.received(helo, "192.0.2.1", b"mx.test", "ESMTP", "Q1", ("b@x.test",), NOW)
            lines = field.split(b"\r\n")
            self.assertEqual(len(lines), 4, helo)
            self.assertTrue(lines[0].startswith(b"Received: from [192.0.2.1] ([192.0.2.1]) (HELO "), helo)
            self.assertTrue(all(line.startswith(b"\t") for line in lines[1:3]), helo)
            comment = lines[0][len(b"Received: from [192.0.2.1] ([192.0.2.1]) (HELO "):]
            self.assertTrue(comment.endswith(b")"))
            self.assertFalse(re.search(rb"[()\\\x00-\x20\x7f-\xff]", comment[:-1]), (helo, comment))
            self.assertLessEqual(len(lines[0]), 200)


class MXReceivedTests(unittest.TestCase):
    def transaction(self, server, transport, recipients=(b"bob@example.com",)):
        server.dataReceived(b"MAIL FROM:<a@remote.test>\r\n" + b"".join(
            b"RCPT TO:<%s>\r\n" % (r,) for r in recipients) + b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
        return replies(transport)[-1]

    def test_esmtp(self):
        server, transport, queue = mx_session()
        server.dataReceived(b"EHLO remote.test\r\n")
        self.assertEqual(self.transaction(server, transport)[:9], "250 2.0.0")
        self.assertEqual(queue.traces, [(
            "Received: from remote.test ([192.168.1.1])\r\n"
            "\tby mx.test (TrekMail) with ESMTP id Q1\r\n"
            "\tfor <bob@example.com>; %s\r\n" % (DATE,)).encode()])
        self.assertEqual(queue.messages[0][1], b"Subject: hi\r\n\r\nbody\r\n")

    def test_esmtps_after_starttls(self):
        server, transport, queue = mx_session()
        server.dataReceived(b"EHLO remote.test\r\nSTARTTLS\r\n")
        server.dataReceived(b"EHLO remote.test\r\n")
        self.transaction(server, transport)
        self.assertIn(b" with ESMTPS id Q1\r\n", queue.traces[0])

    def test_helo_is_smtp(self):
        server, transport, queue = mx_session()
        server.dataReceived(b"HELO remote.test\r\n")
        self.transaction(server, transport, (b"bob@example.com", b"carol@example.com"))
        self.assertIn(b" with SMTP id Q1;\r\n", queue.traces[0])
        self.assertNotIn(b"for <", queue.traces[0])

    def test_helo_with_a_bare_cr_injects_nothing(self):
        server, transport, queue = mx_session()
        server.dataReceived(b"EHLO a\rBcc: victim@remote.test\r\n")
        self.assertEqual(self.transaction(server, transport)[:9], "250 2.0.0")
        field = queue.traces[0]
        self.assertEqual(field.count(b"\r"), 3)
        self.assertEqual(field.count(b"\n"), 3)
        self.assertTrue(field.startswith(b"Received: from [192.168.1.1] ([192.168.1.1]) (HELO a?Bcc:"))


MALFORMED = [
    (b"Subject: hi\r\nno blank line, straight into the body\r\n", "line 2 of the header is not a field"),
    (b"From: a@remote.test\r\nnot a header: as the name has spaces\r\n\r\nx\r\n", "line 2 of the header is not a field"),
    (b" Subject: folded first\r\n\r\nx\r\n", "first line starts with white space"),
    (b"Subject: hi\r\n \t \r\nbody\r\n", "line 2 of the header holds only white space"),
    (b": no name\r\n\r\nx\r\n", "line 1 of the header is not a field"),
    (b"Subj\xc3\xa9ct: 8-bit name\r\n\r\nx\r\n", "line 1 of the header is not a field"),
]


class HeaderCheckTests(unittest.TestCase):
    def test_scan(self):
        self.assertEqual(headercheck.field_names(
            b"From: a\r\nSUBJECT : folded\r\n\tmore\r\nX-8bit: caf\xc3\xa9\r\n\r\n not: header\r\n"),
            {b"from", b"subject", b"x-8bit"})
        self.assertEqual(headercheck.field_names(b""), set())
        self.assertEqual(headercheck.field_names(b"\r\nbody only\r\n"), set())
        self.assertEqual(headercheck.field_names(b"Subject: header only\r\n"), {b"subject"})

    def test_bare_cr_and_lf(self):
        e = self.assertRaises(headercheck.MalformedHeader, headercheck.field_names, b"Subject: a\rb\r\n\r\nx\r\n")
        self.assertIn("line 1 of the header holds a bare CR", str(e))
        e = self.assertRaises(headercheck.MalformedHeader, headercheck.field_names, b"A: 1\r\nB: 2\n\r\nx\r\n")
        self.assertIn("line 2 of the header ends in a bare LF", str(e))

    def test_linear(self):
        many = b"X: y\r\n" * 200000
        self.assertEqual(headercheck.field_names(many + b"\r\n"), {b"x"})
        self.assertRaises(headercheck.MalformedHeader, headercheck.field_names, many + b"oops\r\n")

    def test_mx_refuses_at_end_of_data(self):
        for data, reason in MALFORMED:
            server, transport, queue = mx_session()
            server.dataReceived(b"EHLO remote.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.com>\r\n"
                                b"DATA\r\n" + data + b".\r\nNOOP\r\n")
            lines = replies(transport)
            self.assertTrue(lines[-2].startswith("550 5.6.0 malformed message header: "), (data, lines[-2]))
            self.assertIn(reason, lines[-2])
            self.assertEqual(lines[-1], "250 2.0.0 OK")
            self.assertEqual(queue.messages, [])

    def test_mx_quotes_a_bounded_excerpt(self):
        server, transport, queue = mx_session()
        server.dataReceived(b"EHLO r.test\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nA: 1\r\n"
                            + b"\xff" * 5000 + b"\r\n.\r\n")
        line = replies(transport)[-1]
        self.assertIn("line 2 of the header is not a field ('\\\\xff\\\\xff", line)
        self.assertLess(len(line), 400)


class SubmissionTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()

    def submit(self, port, data=None, recipients=("bob@remote.test",)):
        def run():
            client = self.site.connect(port, login="alice@example.com")
            try:
                return send(client, "alice@example.com", recipients, data)
            finally:
                client.close()

        return self.site.in_thread(run)

    @defer.inlineCallbacks
    def test_received_on_both_listeners(self):
        for port in ("submissions", "submission"):
            replies = yield self.submit(port)
            self.assertEqual(replies[-1][0], 250)
        date = format_datetime(datetime.fromtimestamp(self.site.clock.seconds(), timezone.utc)).encode()
        self.assertEqual(self.site.queue.traces, [(
            b"Received: from client.test ([127.0.0.1])\r\n"
            b"\tby mail.test (TrekMail) with ESMTPSA id Q%d\r\n"
            b"\tfor <bob@remote.test>; %s\r\n" % (n, date)) for n in (1, 2)])

    @defer.inlineCallbacks
    def test_date_and_message_id_added(self):
        replies = yield self.submit("submissions")
        self.assertEqual(replies[-1][0], 250)
        _, data = self.site.queue.messages[0]
        date = format_datetime(datetime.fromtimestamp(self.site.clock.seconds(), timezone.utc)).encode()
        self.assertRegex(data, rb"^Date: " + re.escape(date) + rb"\r\nMessage-ID: <[0-9a-f]{32}@mail\.test>\r\n"
                                 rb"From: alice@example\.com\r\n")
        self.assertEqual(headercheck.field_names(data), {b"date", b"message-id", b"from", b"to", b"subject"})

    @defer.inlineCallbacks
    def test_date_and_message_id_kept(self):
        extra = "Date: Sat, 21 Nov 2026 12:00:00 +0000\r\nmessage-id: <own@example.com>\r\n"
        replies = yield self.submit("submission", message("alice@example.com", extra=extra))
        self.assertEqual(replies[-1][0], 250)
        _, data = self.site.queue.messages[0]
        self.assertEqual(data, message("alice@example.com", extra=extra))

    @defer.inlineCallbacks
    def test_malformed_header_refused(self):
        for data, reason in MALFORMED[:4]:
            replies = yield self.submit("submissions", data)
            code, text = replies[-1]
            self.assertEqual((code, text[:6]), (550, "5.6.0 "), data)
        self.assertEqual(self.site.queue.messages, [])
        self.assertEqual(self.site.queue.traces, [])
