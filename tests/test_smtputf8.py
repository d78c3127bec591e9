"""
SMTPUTF8 (RFC 6531): internationalised addresses on the doors
(trekmail.smtp.address, StringTransport sessions), one kept form for
domains and local parts (trekmail.idn, the realm's checks and logins), and
the relay's downgrade rule (trekmail.relay.utf8 over a StringTransport).
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from tests.test_relay_client import collect, feed, session as client_session
from trekmail import idn
from trekmail.realm.admin import check_address, check_domain
from trekmail.realm.checkers import normalise_address
from trekmail.realm.errors import InvalidInput
from trekmail.queue import dsn
from trekmail.queue.interface import Envelope
from trekmail.relay import client, utf8
from trekmail.smtp.address import AddressRefused, NeedsSMTPUTF8, parse_path
from trekmail.smtp.mx import MXFactory

MAILBOX = "用户@xn--fsqu00a.xn--0zwm56d"
"""用户@例子.测试 as the realm keeps it."""


class FormTests(unittest.TestCase):
    def test_domains_are_kept_as_a_labels(self):
        self.assertEqual(idn.ascii_domain("例子.测试"), "xn--fsqu00a.xn--0zwm56d")
        self.assertEqual(idn.ascii_domain("Bücher.Example"), "xn--bcher-kva.example")
        self.assertEqual(idn.ascii_domain("XN--BCHER-KVA.example"), "xn--bcher-kva.example")
        self.assertEqual(idn.ascii_domain("faß.de"), "xn--fa-hia.de")  # IDNA 2008, not 2003's fass.de
        self.assertEqual(idn.unicode_domain("xn--fsqu00a.xn--0zwm56d"), "例子.测试")

    def test_bad_idns_refused(self):
        for name in ("xn--zz.example", "a\u200db.example", "-x.例子"):
            self.assertRaises(idn.NotAnIDN, idn.ascii_domain, name)

    def test_realm_accepts_both_spellings_as_one(self):
        self.assertEqual(check_domain("例子.测试."), "xn--fsqu00a.xn--0zwm56d")
        self.assertEqual(check_address("用户@例子.测试"), MAILBOX)
        self.assertEqual(check_address("用户@XN--FSQU00A.xn--0zwm56d"), MAILBOX)
        self.assertEqual(check_address("ÜNAL@Bücher.example"), "ünal@xn--bcher-kva.example")
        self.assertEqual(check_address("u\u0308nal@example.com"), "\u00fcnal@example.com")  # NFC
        for bad in ("a b@例子.测试", "用户@xn--zz.example", "用\u200b户@例子.测试", "ü..x@example.com"):
            self.assertRaises(InvalidInput, check_address, bad)

    def test_login_in_either_spelling(self):
        self.assertEqual(normalise_address("用户@例子.测试"), MAILBOX)
        self.assertEqual(normalise_address(" Alice@Example.COM".encode()), "alice@example.com")
        self.assertIsNone(normalise_address("x@xn--zz.example"))

    def test_paths(self):
        self.assertEqual(parse_path("<用户@例子.测试>".encode(), utf8=True), MAILBOX)
        self.assertEqual(parse_path(b"<a@XN--BCHER-KVA.example>"), "a@xn--bcher-kva.example")
        self.assertRaises(NeedsSMTPUTF8, parse_path, "<用户@例子.测试>".encode())
        self.assertRaises(NeedsSMTPUTF8, parse_path, "<a@例子.测试>".encode())
        for bad in (b"<\xff@example.com>", "<a\u3000b@example.com>".encode(), b"<a@xn--zz.example>",
                    "<\u00e9@\u00e9\u00e9.-x>".encode()):
            self.assertRaises(AddressRefused, parse_path, bad, utf8=True)


def mx_session():
    directory = FakeDirectory(["xn--fsqu00a.xn--0zwm56d"], [MAILBOX])
    factory = MXFactory(directory=directory, queue=FakeQueue(), clock=Clock(), hostname="mx.test", tls_options=None)
    server = factory.buildProtocol(None)
    transport = TLSStringTransport()
    server.makeConnection(transport)
    replies(transport)
    return server, transport, factory.queue


class DoorTests(unittest.TestCase):
    def test_advertised(self):
        server, transport, _ = mx_session()
        server.dataReceived(b"EHLO c\r\n")
        self.assertIn("SMTPUTF8", [line[4:] for line in replies(transport)])

    def test_utf8_transaction(self):
        server, transport, queue = mx_session()
        server.dataReceived("EHLO c\r\nMAIL FROM:<发件人@例子.测试> SMTPUTF8\r\nRCPT TO:<用户@例子.测试>\r\n"
                            "DATA\r\nSubject: 你好\r\n\r\nhi\r\n.\r\n".encode())
        self.assertEqual([line[:9] for line in replies(transport)][-4:],
                         ["250 2.1.0", "250 2.1.5", "354 2.0.0", "250 2.0.0"])
        envelope, message = queue.messages[0]
        self.assertEqual((envelope.sender, envelope.recipients), ("发件人@xn--fsqu00a.xn--0zwm56d", (MAILBOX,)))
        self.assertIn(" with UTF8SMTP id Q1", queue.traces[0].decode("utf-8"))

    def test_a_labels_without_smtputf8_name_the_same_domain(self):
        server, transport, queue = mx_session()
        server.factory.directory.add_mailbox("info@xn--fsqu00a.xn--0zwm56d")
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<info@XN--FSQU00A.xn--0zwm56d>\r\n"
                            b"BDAT 11 LAST\r\nSubject: \r\n")
        self.assertEqual([line[:9] for line in replies(transport)][-3:], ["250 2.1.0", "250 2.1.5", "250 2.0.0"])
        self.assertEqual(queue.messages[0][0].recipients, ("info@xn--fsqu00a.xn--0zwm56d",))
        self.assertIn(" with ESMTP id Q1", queue.traces[0].decode("utf-8"))

    def test_non_ascii_without_smtputf8_is_553_567(self):
        server, transport, queue = mx_session()
        server.dataReceived("EHLO c\r\nMAIL FROM:<发件人@例子.测试>\r\nMAIL FROM:<>\r\nRCPT TO:<用户@例子.测试>\r\n"
                            "RSET\r\nMAIL FROM:<> SMTPUTF8=yes\r\n".encode())
        lines = replies(transport)
        self.assertEqual([line[:9] for line in lines][-5:],
                         ["553 5.6.7", "250 2.1.0", "553 5.6.7", "250 2.0.0", "501 5.5.4"])
        self.assertIn("SMTPUTF8", lines[-5])

    def test_reset_ends_smtputf8(self):
        server, transport, queue = mx_session()
        server.dataReceived("EHLO c\r\nMAIL FROM:<> SMTPUTF8\r\nRSET\r\nMAIL FROM:<>\r\nRCPT TO:<用户@例子.测试>\r\n".encode())
        self.assertEqual(replies(transport)[-1][:9], "553 5.6.7")


UTF8_JOB = ("发件人@example.com", "用户@xn--fsqu00a.xn--0zwm56d", "ascii@xn--fsqu00a.xn--0zwm56d")


class RelayTests(unittest.TestCase):
    def test_smtputf8_asked_for_where_offered(self):
        job = client.Job("a@s.test", (UTF8_JOB[1],), b"Subject: x\r\n\r\nhi\r\n")
        results = collect(job)
        p, t = client_session([job])
        feed(p, t, b"220 sink")
        self.assertEqual(feed(p, t, b"250-sink", b"250-8BITMIME", b"250 SMTPUTF8"),
                         b"MAIL FROM:<a@s.test> SMTPUTF8\r\n")
        self.assertEqual(feed(p, t, b"250 ok"), "RCPT TO:<用户@xn--fsqu00a.xn--0zwm56d>\r\n".encode())
        feed(p, t, b"250 ok")
        feed(p, t, b"354 go")
        feed(p, t, b"250 2.0.0 queued")
        self.assertEqual([o.code for o in results], [250])

    def test_header_only_utf8_goes_as_it_is_without_smtputf8(self):
        job = client.Job("a@s.test", ("b@r.test",), "Subject: 你好\r\n\r\nhi\r\n".encode())
        collect(job)
        p, t = client_session([job])
        feed(p, t, b"220 sink")
        self.assertEqual(feed(p, t, b"250-sink", b"250 8BITMIME"), b"MAIL FROM:<a@s.test> BODY=8BITMIME\r\n")

    def test_what_cannot_be_downgraded_fails_the_rest_goes(self):
        """A UTF-8 local part fails with 553 5.6.7; the A-label domain of the ASCII one goes as it is."""
        job = client.Job("a@s.test", UTF8_JOB[1:], b"Subject: x\r\n\r\nhi\r\n")
        results = collect(job)
        p, t = client_session([job], remote="mx.r.test")
        feed(p, t, b"220 sink")
        self.assertEqual(feed(p, t, b"250-sink", b"250 PIPELINING"),
                         b"MAIL FROM:<a@s.test>\r\nRCPT TO:<ascii@xn--fsqu00a.xn--0zwm56d>\r\nDATA\r\n")
        feed(p, t, b"250 ok", b"250 ok", b"354 go")
        feed(p, t, b"250 2.0.0 queued")
        outcome = {o.recipient: o for o in results}
        self.assertEqual(outcome[UTF8_JOB[2]].code, 250)
        refused = outcome[UTF8_JOB[1]]
        self.assertEqual((refused.code, refused.status, refused.permanent), (553, "5.6.7", True))
        self.assertIn("does not offer SMTPUTF8", refused.text)
        self.assertEqual(refused.peer, outcome[UTF8_JOB[2]].peer)

    def test_utf8_sender_fails_every_recipient(self):
        job = client.Job(UTF8_JOB[0], ("b@r.test", "c@r.test"), b"Subject: x\r\n\r\nhi\r\n")
        results = collect(job)
        p, t = client_session([job])
        feed(p, t, b"220 sink")
        self.assertEqual(feed(p, t, b"250 sink"), b"QUIT\r\n")
        self.assertEqual([(o.code, o.status) for o in results], [(553, "5.6.7")] * 2)
        self.assertIn("the sender's address has a non-ASCII local part", results[0].text)

    def test_the_report_names_the_address_in_rfc_6533_form(self):
        """The DSN for a recipient that could not be downgraded says why, and which, in ASCII."""
        [outcome] = utf8.refusals((UTF8_JOB[1],), "a@s.test", "mx.r.test")
        envelope = Envelope(sender="a@s.test", recipients=(UTF8_JOB[1],), origin="submission")
        report = dsn.build_report("mail.test", "Q1", envelope, [outcome], 10.0, b"Subject: x\r\n\r\nhi\r\n")
        self.assertTrue(report.isascii())
        self.assertIn(b"Final-Recipient: utf-8; \\x{7528}\\x{6237}@xn--fsqu00a.xn--0zwm56d\r\n", report)
        self.assertIn(b"Status: 5.6.7\r\n", report)
        self.assertIn(b"<\\x{7528}\\x{6237}@xn--fsqu00a.xn--0zwm56d>: 5.6.7 the recipient's address has a non-ASCII"
                      b" local part and mx.r.test does not offer SMTPUTF8", report)
