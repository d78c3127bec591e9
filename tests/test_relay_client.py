"""
The ESMTP client core: dot-stuffing of the whole message, per-recipient
outcomes, STARTTLS that ignores bytes sent before the handshake, and
RFC 2920 pipelining of MAIL, RCPT and DATA.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from trekmail import delivery
from trekmail.relay import client


class WireFormTests(unittest.TestCase):
    def test_lone_dots_are_stuffed(self):
        self.assertEqual(client.dot_stuff(b".\r\na\r\n.b\r\n"), b"..\r\na\r\n..b\r\n.\r\n")

    def test_crlf_is_kept(self):
        self.assertEqual(delivery.wire_form(b"a\r\nb\r\n"), b"a\r\nb\r\n")

    def test_bare_line_ends_become_crlf(self):
        self.assertEqual(delivery.wire_form(b"a\nb\rc\r\n\n"), b"a\r\nb\r\nc\r\n\r\n")

    def test_final_line_end_added(self):
        self.assertEqual(client.dot_stuff(delivery.wire_form(b"x\r\n.")), b"x\r\n..\r\n.\r\n")

    def test_no_unstuffed_terminator_anywhere(self):
        """Whatever the offset of a lone dot, the only CRLF.CRLF is the last five bytes."""
        for k in (1, 2):
            for offset in range(16384 * k - 6, 16384 * k + 6):
                body = b"x" * offset + b"\r\n.\r\n" + b"y\r\n"
                payload = client.dot_stuff(delivery.wire_form(b"Subject: t\r\n\r\n" + body))
                self.assertEqual(payload.find(b"\r\n.\r\n"), len(payload) - 5)

    def test_status_from_enhanced_code(self):
        self.assertEqual(delivery.Outcome("a@b", 550, "5.1.1 no such user").status, "5.1.1")
        self.assertEqual(delivery.Outcome("a@b", 451, "try later").status, "4.0.0")


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tls_started = None

    def startTLS(self, context):
        self.tls_started = context


def session(jobs, **options):
    transport = TLSStringTransport()
    pending = list(jobs)
    protocol = client.DeliveryClient(
        b"relay.test", lambda: pending.pop(0) if pending else None, clock=Clock(), **options
    )
    protocol.makeConnection(transport)
    return protocol, transport


def feed(protocol, transport, *lines):
    transport.clear()
    protocol.dataReceived(b"".join(line + b"\r\n" for line in lines))
    return transport.value()


class ClientTests(unittest.TestCase):
    def test_per_recipient_outcomes(self):
        job = client.Job("a@s.test", ("ok@r.test", "gone@r.test", "later@r.test"), b"Subject: x\r\n\r\n.\r\n")
        results = collect(job)
        p, t = session([job])
        feed(p, t, b"220 sink")
        self.assertEqual(feed(p, t, b"250 sink"), b"MAIL FROM:<a@s.test>\r\n")
        self.assertEqual(feed(p, t, b"250 ok"), b"RCPT TO:<ok@r.test>\r\n")
        feed(p, t, b"250 ok")
        feed(p, t, b"550 5.1.1 no such user")
        self.assertEqual(feed(p, t, b"451 4.2.0 greylisted"), b"DATA\r\n")
        sent = feed(p, t, b"354 go")
        self.assertEqual(sent, b"Subject: x\r\n\r\n..\r\n.\r\n")
        self.assertEqual(feed(p, t, b"250 2.0.0 queued"), b"QUIT\r\n")
        codes = {o.recipient: (o.code, o.status) for o in results}
        self.assertEqual(codes, {
            "ok@r.test": (250, "2.0.0"), "gone@r.test": (550, "5.1.1"), "later@r.test": (451, "4.2.0"),
        })

    def test_next_message_on_same_connection(self):
        first = client.Job("a@s.test", ("x@r.test",), b"one\r\n")
        second = client.Job("b@s.test", ("y@r.test",), b"two\r\n")
        p, t = session([first, second])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        feed(p, t, b"250 ok")
        feed(p, t, b"250 ok")
        feed(p, t, b"354 go")
        self.assertEqual(feed(p, t, b"250 queued"), b"MAIL FROM:<b@s.test>\r\n")
        feed(p, t, b"250 ok")
        self.assertEqual(feed(p, t, b"550 5.1.1 no"), b"RSET\r\n")
        self.assertEqual(feed(p, t, b"250 ok"), b"QUIT\r\n")
        self.assertEqual([o.code for o in first.done.result + second.done.result], [250, 550])

    def test_mail_from_refused(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        results = collect(job)
        p, t = session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        feed(p, t, b"553 5.7.1 sender refused")
        self.assertEqual([(o.code, o.status) for o in results], [(553, "5.7.1")])

    def test_connection_lost_mid_transaction_is_temporary(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        results = collect(job)
        p, t = session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        feed(p, t, b"250 ok")
        p.connectionLost(None)
        self.assertEqual(len(results), 1)
        self.assertFalse(results[0].permanent)
        self.assertFalse(results[0].delivered)

    def test_connection_lost_after_the_socket_is_gone(self):
        """
        A closed TCP transport has no socket left to ask about TLS (its
        C{getHandle} raises), and the job still finishes as temporary.
        """
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        results = collect(job)
        p, t = session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        t.connected = False

        def no_socket():
            raise AttributeError("'Client' object has no attribute 'socket'")
        t.getHandle = no_socket
        p.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([(o.code, o.permanent) for o in results], [(451, False)])

    def test_bytes_before_tls_are_ignored(self):
        """
        A reply injected in the clear after the 220 to STARTTLS must not
        be taken as the answer to the EHLO sent over TLS.
        """
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        p, t = session([job], tls_context=object())
        feed(p, t, b"220 sink")
        self.assertEqual(feed(p, t, b"250-sink", b"250 STARTTLS"), b"STARTTLS\r\n")
        after = feed(p, t, b"220 go ahead", b"250-injected", b"250 injected")
        self.assertIsNotNone(t.tls_started)
        self.assertEqual(after, b"EHLO relay.test\r\n")
        self.assertEqual(feed(p, t, b"250 sink over tls"), b"MAIL FROM:<a@s.test>\r\n")

    def test_required_tls_missing_fails_without_sending(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        p, t = session([job], tls_context=object(), require_tls=True)
        feed(p, t, b"220 sink")
        sent = feed(p, t, b"250 sink")
        self.assertNotIn(b"MAIL FROM", sent)
        self.assertIsNotNone(p.error)


def collect(job):
    results = []
    job.done.addCallback(results.extend)
    return results


class PipeliningTests(unittest.TestCase):
    """RFC 2920: MAIL, RCPTs and DATA in one write when the server offers PIPELINING."""

    def greet(self, jobs, extensions=(b"250-sink", b"250-8BITMIME", b"250 PIPELINING"), **options):
        p, t = session(jobs, **options)
        feed(p, t, b"220 sink")
        t.clear()
        writes = []
        t.write = lambda data, write=t.write: (writes.append(data), write(data))[1]
        p.dataReceived(b"".join(line + b"\r\n" for line in extensions))
        return p, t, writes

    def test_transaction_is_one_write(self):
        job = client.Job("a@s.test", ("x@r.test", "y@r.test"), b"Subject: x\r\n\r\n.\r\n")
        results = collect(job)
        p, t, writes = self.greet([job])
        self.assertEqual(writes, [
            b"MAIL FROM:<a@s.test>\r\nRCPT TO:<x@r.test>\r\nRCPT TO:<y@r.test>\r\nDATA\r\n",
        ])
        sent = feed(p, t, b"250 ok", b"250 ok", b"250 ok", b"354 go")
        self.assertEqual(sent, b"Subject: x\r\n\r\n..\r\n.\r\n")
        self.assertEqual(feed(p, t, b"250 2.0.0 queued"), b"QUIT\r\n")
        self.assertEqual([(o.recipient, o.code) for o in results], [("x@r.test", 250), ("y@r.test", 250)])

    def test_replies_map_to_their_recipients(self):
        job = client.Job("a@s.test", ("ok@r.test", "gone@r.test", "later@r.test", "ok2@r.test"), b"x\r\n")
        results = collect(job)
        p, t, writes = self.greet([job])
        self.assertEqual(writes[0].count(b"\r\n"), 6)
        sent = feed(p, t, b"250 ok", b"250 ok", b"550 5.1.1 no such user", b"451 4.2.0 greylisted",
                    b"250 ok", b"354 go")
        self.assertEqual(sent, b"x\r\n.\r\n")
        feed(p, t, b"250 2.0.0 queued as Q1")
        codes = {o.recipient: (o.code, o.status) for o in results}
        self.assertEqual(codes, {
            "ok@r.test": (250, "2.0.0"), "gone@r.test": (550, "5.1.1"),
            "later@r.test": (451, "4.2.0"), "ok2@r.test": (250, "2.0.0"),
        })

    def test_all_recipients_refused(self):
        """
        The DATA reply is read, not taken for the next command's; each
        recipient gets its own RCPT reply; RSET, then the next message.
        """
        first = client.Job("a@s.test", ("gone@r.test", "later@r.test"), b"one\r\n")
        second = client.Job("b@s.test", ("y@r.test",), b"two\r\n")
        results = collect(first)
        p, t, writes = self.greet([first, second])
        sent = feed(p, t, b"250 ok", b"550 5.1.1 no such user", b"450 4.2.1 mailbox busy")
        self.assertEqual(sent, b"")
        self.assertEqual(results, [])
        self.assertEqual(feed(p, t, b"554 5.5.1 no valid recipients"), b"RSET\r\n")
        self.assertEqual(
            [(o.recipient, o.code, o.permanent, o.delivered) for o in results],
            [("gone@r.test", 550, True, False), ("later@r.test", 450, False, False)],
        )
        self.assertEqual(feed(p, t, b"250 ok"), b"MAIL FROM:<b@s.test>\r\nRCPT TO:<y@r.test>\r\nDATA\r\n")
        self.assertEqual(feed(p, t, b"250 ok", b"250 ok", b"354 go"), b"two\r\n.\r\n")
        self.assertEqual(feed(p, t, b"250 queued"), b"QUIT\r\n")
        self.assertEqual([o.code for o in second.done.result], [250])

    def test_refused_mail_answers_for_everyone(self):
        job = client.Job("a@s.test", ("x@r.test", "y@r.test"), b"x\r\n")
        results = collect(job)
        p, t, writes = self.greet([job])
        sent = feed(p, t, b"553 5.7.1 sender refused", b"503 5.5.1 need MAIL", b"503 5.5.1 need MAIL",
                    b"503 5.5.1 need MAIL")
        self.assertEqual(sent, b"RSET\r\n")
        self.assertEqual([(o.code, o.status) for o in results], [(553, "5.7.1"), (553, "5.7.1")])

    def test_data_started_without_recipients_is_ended_empty(self):
        job = client.Job("a@s.test", ("x@r.test",), b"secret\r\n")
        results = collect(job)
        p, t, writes = self.greet([job])
        self.assertEqual(feed(p, t, b"250 ok", b"550 5.1.1 no", b"354 go"), b".\r\n")
        self.assertEqual(feed(p, t, b"250 ok"), b"RSET\r\n")
        self.assertEqual([(o.code, o.status) for o in results], [(550, "5.1.1")])

    def test_next_message_follows_the_body(self):
        """RFC 2920 section 3.1: a body may open a group, so the next MAIL rides with it."""
        first = client.Job("a@s.test", ("x@r.test",), b"one\r\n")
        second = client.Job("b@s.test", ("y@r.test", "z@r.test"), b"two\r\n")
        p, t, writes = self.greet([first, second])
        self.assertEqual(
            feed(p, t, b"250 ok", b"250 ok", b"354 go"),
            b"one\r\n.\r\nMAIL FROM:<b@s.test>\r\nRCPT TO:<y@r.test>\r\nRCPT TO:<z@r.test>\r\nDATA\r\n",
        )
        self.assertEqual(feed(p, t, b"250 queued as 1"), b"")
        self.assertEqual([o.code for o in first.done.result], [250])
        self.assertEqual(feed(p, t, b"250 ok", b"550 5.1.1 no", b"250 ok", b"354 go"), b"two\r\n.\r\n")
        self.assertEqual(feed(p, t, b"250 queued as 2"), b"QUIT\r\n")
        self.assertEqual([(o.recipient, o.code) for o in second.done.result], [("y@r.test", 550), ("z@r.test", 250)])
        self.assertEqual(p.transactions, 2)

    def test_refused_body_with_next_queued_needs_no_rset(self):
        first = client.Job("a@s.test", ("x@r.test",), b"one\r\n")
        second = client.Job("b@s.test", ("y@r.test",), b"two\r\n")
        p, t, writes = self.greet([first, second])
        feed(p, t, b"250 ok", b"250 ok", b"354 go")
        self.assertEqual(feed(p, t, b"554 5.7.1 content refused"), b"")
        self.assertEqual([(o.code, o.status) for o in first.done.result], [(554, "5.7.1")])
        self.assertEqual(feed(p, t, b"250 ok", b"250 ok", b"354 go"), b"two\r\n.\r\n")
        feed(p, t, b"250 queued")
        self.assertEqual([o.code for o in second.done.result], [250])

    def test_connection_lost_with_next_queued_fails_both(self):
        first = client.Job("a@s.test", ("x@r.test",), b"one\r\n")
        second = client.Job("b@s.test", ("y@r.test",), b"two\r\n")
        p, t, writes = self.greet([first, second])
        feed(p, t, b"250 ok", b"250 ok", b"354 go")
        p.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([(o.code, o.permanent) for o in first.done.result + second.done.result],
                         [(451, False), (451, False)])

    def test_without_pipelining_one_command_per_round_trip(self):
        job = client.Job("a@s.test", ("x@r.test", "y@r.test"), b"x\r\n")
        results = collect(job)
        p, t, writes = self.greet([job], extensions=(b"250-sink", b"250 8BITMIME"))
        self.assertEqual(writes, [b"MAIL FROM:<a@s.test>\r\n"])
        self.assertEqual(feed(p, t, b"250 ok"), b"RCPT TO:<x@r.test>\r\n")
        self.assertEqual(feed(p, t, b"250 ok"), b"RCPT TO:<y@r.test>\r\n")
        self.assertEqual(feed(p, t, b"550 no"), b"DATA\r\n")
        self.assertEqual(feed(p, t, b"354 go"), b"x\r\n.\r\n")
        feed(p, t, b"250 queued")
        self.assertEqual([o.code for o in results], [250, 550])

    def test_pipelining_offered_only_before_tls_is_not_used(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        p, t, writes = self.greet([job], extensions=(b"250-sink", b"250-PIPELINING", b"250 STARTTLS"),
                                  tls_context=object())
        self.assertEqual(writes, [b"STARTTLS\r\n"])
        self.assertEqual(feed(p, t, b"220 go ahead"), b"EHLO relay.test\r\n")
        self.assertEqual(feed(p, t, b"250 sink over tls"), b"MAIL FROM:<a@s.test>\r\n")


EIGHT_BIT = "Subject: caf\u00e9\r\nContent-Transfer-Encoding: 8bit\r\n\r\nd\u00e9j\u00e0 vu\r\n".encode("utf-8")


class EightBitTests(unittest.TestCase):
    """RFC 6152: BODY=8BITMIME when the server offers it, 554 5.6.3 when it does not."""

    def greet(self, jobs, extensions):
        p, t = session(jobs)
        feed(p, t, b"220 sink")
        return p, t, feed(p, t, *extensions)

    def test_eight_bit_message_is_declared_pipelined(self):
        job = client.Job("a@s.test", ("x@r.test",), EIGHT_BIT)
        p, t, sent = self.greet([job], (b"250-sink", b"250-8BITMIME", b"250 PIPELINING"))
        self.assertEqual(sent, b"MAIL FROM:<a@s.test> BODY=8BITMIME\r\nRCPT TO:<x@r.test>\r\nDATA\r\n")
        self.assertEqual(feed(p, t, b"250 ok", b"250 ok", b"354 go"), EIGHT_BIT + b".\r\n")

    def test_eight_bit_message_is_declared_in_lock_step(self):
        job = client.Job("a@s.test", ("x@r.test",), EIGHT_BIT)
        p, t, sent = self.greet([job], (b"250-sink", b"250 8BITMIME"))
        self.assertEqual(sent, b"MAIL FROM:<a@s.test> BODY=8BITMIME\r\n")

    def test_seven_bit_message_has_no_body_parameter(self):
        job = client.Job("a@s.test", ("x@r.test",), b"Subject: plain\r\n\r\nhi\r\n")
        p, t, sent = self.greet([job], (b"250-sink", b"250 8BITMIME"))
        self.assertEqual(sent, b"MAIL FROM:<a@s.test>\r\n")

    def test_server_without_8bitmime_gets_no_eight_bit_message(self):
        eight = client.Job("a@s.test", ("x@r.test", "y@r.test"), EIGHT_BIT)
        seven = client.Job("b@s.test", ("z@r.test",), b"Subject: plain\r\n\r\nhi\r\n")
        p, t, sent = self.greet([eight, seven], (b"250-sink", b"250 PIPELINING"))
        self.assertEqual(sent, b"MAIL FROM:<b@s.test>\r\nRCPT TO:<z@r.test>\r\nDATA\r\n")
        self.assertEqual([(o.code, o.status, o.permanent) for o in eight.done.result],
                         [(554, "5.6.3", True)] * 2)
        self.assertIn("8BITMIME", eight.done.result[0].text)
        self.assertFalse(seven.done.called)


class TimeoutTests(unittest.TestCase):
    """RFC 5321 section 4.5.3.2: how long each reply is waited for."""

    def session(self, jobs, extensions=(b"250-sink", b"250 PIPELINING")):
        self.clock = Clock()
        pending = list(jobs)
        p = client.DeliveryClient(b"relay.test", lambda: pending.pop(0) if pending else None, clock=self.clock)
        t = TLSStringTransport()
        p.makeConnection(t)
        return p, t

    def assertWaits(self, p, t, seconds):
        """Nothing happens for C{seconds} minus one, then the client gives up."""
        t.clear()
        self.clock.advance(seconds - 1)
        self.assertEqual(t.value(), b"")
        self.assertIsNone(p.error)
        self.clock.advance(2)
        self.assertEqual(p.error[0], 451)
        self.assertTrue(t.disconnecting or b"QUIT" in t.value())

    def test_greeting_waits_five_minutes(self):
        p, t = self.session([])
        self.assertWaits(p, t, 300)

    def test_mail_and_rcpt_wait_five_minutes(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        p, t = self.session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        self.assertWaits(p, t, 300)

    def test_data_reply_waits_two_minutes(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        p, t = self.session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250-sink", b"250 PIPELINING")
        feed(p, t, b"250 ok", b"250 ok")
        self.assertWaits(p, t, 120)

    def test_data_reply_waits_two_minutes_in_lock_step(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        p, t = self.session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        feed(p, t, b"250 ok")
        self.assertEqual(feed(p, t, b"250 ok"), b"DATA\r\n")
        self.assertWaits(p, t, 120)

    def test_final_dot_waits_ten_minutes(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        results = collect(job)
        p, t = self.session([job])
        feed(p, t, b"220 sink")
        feed(p, t, b"250-sink", b"250 PIPELINING")
        self.assertEqual(feed(p, t, b"250 ok", b"250 ok", b"354 go"), b"x\r\n.\r\n")
        self.assertWaits(p, t, 600)
        p.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([o.code for o in results], [451])

    def test_next_mail_after_a_message_waits_five_minutes_again(self):
        first = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        second = client.Job("a@s.test", ("y@r.test",), b"y\r\n")
        p, t = self.session([first, second])
        feed(p, t, b"220 sink")
        feed(p, t, b"250 sink")
        feed(p, t, b"250 ok")
        feed(p, t, b"250 ok")
        feed(p, t, b"354 go")
        self.assertEqual(feed(p, t, b"250 queued"), b"MAIL FROM:<a@s.test>\r\n")
        self.assertWaits(p, t, 300)


class GreetingTests(unittest.TestCase):
    def test_421_greeting_is_reported_as_given(self):
        job = client.Job("a@s.test", ("x@r.test",), b"x\r\n")
        p, t = session([job])
        feed(p, t, b"421 4.7.0 mx.r.test too many connections, try later")
        self.assertEqual(p.error, (421, "4.7.0 mx.r.test too many connections, try later"))
        self.assertFalse(job.done.called)
