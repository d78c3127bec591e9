"""
The shared ESMTP wire (trekmail.smtp.server), driven through the MX door
over a StringTransport: pipelining order, the STARTTLS discard, line and
size limits, and the canonical DATA form.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from trekmail.smtp.data import DataIntake, DataReader, canonical
from trekmail.smtp.mx import MXFactory
from trekmail.smtp.server import (
    MAX_COMMAND_LINE, MAX_ERRORS, QUEUED_LOG_MESSAGES, QUEUED_LOG_SECONDS,
)


def session(tls=True, directory=None):
    queue = FakeQueue()
    directory = directory or FakeDirectory(["example.com"], ["bob@example.com"])
    factory = MXFactory(
        directory=directory,
        queue=queue,
        clock=Clock(),
        hostname="mx.test",
        tls_options=object() if tls else None,
    )
    server = factory.buildProtocol(None)
    transport = TLSStringTransport()
    server.makeConnection(transport)
    assert replies(transport)[0].startswith("220 mx.test")
    return server, transport, queue, directory


def codes(transport):
    return [line[:3] for line in replies(transport) if line[3:4] == " "]


class PipeliningTests(unittest.TestCase):
    def test_replies_in_order_while_a_check_waits(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\n")
        replies(transport)
        directory.held = []
        server.dataReceived(
            b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.com>\r\n"
            b"RCPT TO:<nobody@example.com>\r\nNOOP\r\nDATA\r\n"
        )
        self.assertEqual(codes(transport), ["250"])
        while directory.held:
            directory.release()
            directory.held = []
        directory.held = None
        self.assertEqual(codes(transport), ["250", "550", "250", "354"])

    def test_transport_paused_when_too_much_waits(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<>\r\n")
        directory.held = []
        server.dataReceived(b"RCPT TO:<bob@example.com>\r\n" + b"NOOP\r\n" * 20000)
        self.assertEqual(transport.producerState, "paused")
        directory.release()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(codes(transport)[-20001:], ["250"] * 20001)


class STARTTLSTests(unittest.TestCase):
    def test_bytes_after_starttls_are_discarded(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\n")
        self.assertIn("STARTTLS", [line[4:] for line in replies(transport)])
        server.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.com>\r\n")
        self.assertEqual(replies(transport), ["220 2.0.0 ready to start TLS"])
        self.assertIsNotNone(transport.tls_started_with)
        server.dataReceived(b"RCPT TO:<bob@example.com>\r\n")
        self.assertEqual(codes(transport), ["503"])

    def test_starttls_forgets_ehlo(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        replies(transport)
        server.dataReceived(b"MAIL FROM:<a@remote.test>\r\nEHLO c\r\n")
        lines = replies(transport)
        self.assertTrue(lines[0].startswith("503 5.5.1"), lines)
        self.assertNotIn("STARTTLS", [line[4:] for line in lines])
        server.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(codes(transport), ["503"])

    def test_no_starttls_without_context(self):
        server, transport, queue, directory = session(tls=False)
        server.dataReceived(b"EHLO c\r\n")
        self.assertNotIn("STARTTLS", [line[4:] for line in replies(transport)])
        server.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(replies(transport), ["454 4.7.0 TLS not available"])


class LimitTests(unittest.TestCase):
    def test_extensions_advertised(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\n")
        lines = replies(transport)
        for extension in ("ENHANCEDSTATUSCODES", "PIPELINING", "8BITMIME", "SIZE 26214400"):
            self.assertTrue(any(line[4:] == extension for line in lines), (extension, lines))
        self.assertFalse(any("AUTH" in line for line in lines))

    def test_long_command_line(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"NOOP " + b"x" * (MAX_COMMAND_LINE * 3))
        self.assertEqual(replies(transport), [])
        server.dataReceived(b"yyy\r\nNOOP\r\n")
        self.assertEqual(replies(transport), ["500 5.5.2 line too long (the limit is 4096 bytes)", "250 2.0.0 OK"])

    def test_too_many_errors_close_the_session(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\n" + b"BOGUS\r\nNOOP\r\n" * (MAX_ERRORS - 1) + b"RCPT TO:<bob@example.com>\r\n")
        self.assertEqual(codes(transport), ["250"] + ["500", "250"] * (MAX_ERRORS - 1) + ["503", "421"])
        server.dataReceived(b"NOOP\r\n")
        self.assertEqual(replies(transport), [])
        self.assertTrue(transport.disconnecting)

    def test_errors_below_the_limit_keep_the_session(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"MAIL FROM:<a@remote.test>\r\n" * (MAX_ERRORS - 1) + b"NOOP\r\n")
        self.assertEqual(codes(transport), ["503"] * (MAX_ERRORS - 1) + ["250"])
        self.assertFalse(transport.disconnecting)

    def test_size_parameter_over_limit(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<a@remote.test> SIZE=26214401\r\n")
        self.assertEqual(codes(transport), ["250", "552"])

    def test_unknown_parameter(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<a@remote.test> FOO=1\r\nMAIL FROM:<a@x.test> BODY=8BITMIME\r\n")
        self.assertEqual(codes(transport), ["250", "555", "250"])

    def test_message_over_size_refused_without_buffering(self):
        server, transport, queue, directory = session()
        server.max_message_size = 1000
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        replies(transport)
        for _ in range(100):
            server.dataReceived(b"x" * 99 + b"\r\n")
        self.assertEqual(server._reader._chunks, [])
        server.dataReceived(b".\r\nNOOP\r\n")
        self.assertEqual(codes(transport), ["552", "250"])
        self.assertEqual(queue.messages, [])

    def test_unknown_command_and_garbage(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"FROB\r\n\xff\xfe\r\n\r\nHELP ME\r\nUNKNOWN\r\n")
        lines = replies(transport)
        self.assertEqual([line[:6] for line in lines], ["500 5."] * 5)

    def test_timeout(self):
        server, transport, queue, directory = session()
        server.clock.advance(server.timeout + 1)
        self.assertEqual(codes(transport), ["421"])
        self.assertTrue(transport.disconnecting)


class DataTests(unittest.TestCase):
    def deliver(self, *chunks):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        replies(transport)
        for chunk in chunks:
            server.dataReceived(chunk)
        return codes(transport), queue

    def test_end_only_on_crlf_dot_crlf(self):
        result, queue = self.deliver(
            b"Subject: x\r\n\r\na\n.\nb\r\n.\nc\r.\rd\n.\r\ne\r\n.\r\n"
        )
        self.assertEqual(result, ["250"])
        self.assertEqual(queue.messages[0][1], b"Subject: x\r\n\r\na\r\n\r\nb\r\n\r\nc\r\n.\r\nd\r\n\r\ne\r\n")

    def test_stuffing_dot_after_a_bare_lf_is_removed(self):
        result, queue = self.deliver(b"Subject: x\r\n\r\na\n..x\n.y\r..z\r\n..\r\n.\r\n")
        self.assertEqual(result, ["250"])
        self.assertEqual(queue.messages[0][1], b"Subject: x\r\n\r\na\r\n.x\r\ny\r\n..z\r\n.\r\n")

    def test_end_split_across_reads(self):
        result, queue = self.deliver(b"a:\r\n\r\n..b\r", b"\n.", b"\r", b"\n")
        self.assertEqual(result, ["250"])
        self.assertEqual(queue.messages[0][1], b"a:\r\n\r\n.b\r\n")

    def test_empty_body(self):
        result, queue = self.deliver(b".\r\n")
        self.assertEqual(result, ["250"])
        self.assertEqual(queue.messages[0][1], b"")

    def test_pipelined_after_data(self):
        result, queue = self.deliver(b"x:\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\ny:\r\n.\r\nQUIT\r\n")
        self.assertEqual(result, ["250", "250", "250", "354", "250", "221"])
        self.assertEqual([m for _, m in queue.messages], [b"x:\r\n", b"y:\r\n"])

    def test_slow_body_is_not_idle(self):
        server, transport, queue, directory = session()
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        for _ in range(4):
            server.clock.advance(server.timeout - 1)
            server.dataReceived(b"a: line\r\n")
        server.dataReceived(b".\r\n")
        self.assertEqual(codes(transport)[-1], "250")
        server.clock.advance(server.timeout)
        self.assertEqual(codes(transport)[-1], "421")

    def test_queue_failure(self):
        server, transport, queue, directory = session()
        queue.fail = True
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx:\r\n.\r\n")
        self.assertEqual(replies(transport)[-1], "451 4.3.0 could not store the message, please try again")

    def test_250_waits_for_the_queue(self):
        server, transport, queue, directory = session()
        queue.held = []
        server.dataReceived(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx:\r\n.\r\nNOOP\r\n")
        self.assertEqual(codes(transport), ["250", "250", "250", "354"])
        queue.held[0][2].callback("Q7")
        self.assertEqual(replies(transport), ["250 2.0.0 OK: queued as Q7", "250 2.0.0 OK"])

    def test_canonical(self):
        self.assertEqual(canonical(b"\r\na\r\n"), b"a\r\n")
        self.assertEqual(canonical(b"\r\n.a\r\n..\r\n"), b"a\r\n.\r\n")
        self.assertEqual(canonical(b"\r\na\nb\rc\r\n"), b"a\r\nb\r\nc\r\n")

    def test_reader_byte_by_byte(self):
        reader = DataReader(1000, DataIntake())
        stream = b"a\r\n..\r\nb\r\n.\r\nrest"
        results = [reader.feed(stream[i:i + 1]) for i in range(len(stream))]
        ended = [i for i, r in enumerate(results) if r is not None]
        self.assertEqual(ended[0], stream.index(b"\r\n.\r\n") + 4)
        self.assertEqual(reader.message(), b"a\r\n.\r\nb\r\n")


class QueuedLogTests(unittest.TestCase):
    def setUp(self):
        self.server, self.transport, self.queue, _ = session()
        self.events = []
        self.server.log = Logger(observer=self.events.append)
        self.server.dataReceived(b"EHLO c\r\n")

    def send(self, count):
        transaction = b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx:\r\n.\r\n"
        self.server.dataReceived(transaction * count)

    def logged(self):
        return [[queue_id for queue_id, _, _ in e["queued"]] for e in self.events if "queued" in e]

    def test_logged_together_when_the_connection_ends(self):
        self.send(3)
        self.assertEqual(self.logged(), [])
        self.server.connectionLost(Failure(Exception("gone")))
        self.assertEqual(self.logged(), [["Q1", "Q2", "Q3"]])
        self.assertEqual(self.events[-1]["queued"][0], ("Q1", "a@remote.test", 1))
        self.assertIn("Q3 <a@remote.test> to 1", self.events[-1]["text"])

    def test_logged_after_a_second_or_a_full_batch(self):
        self.send(1)
        self.server.clock.advance(QUEUED_LOG_SECONDS)
        self.send(1)
        self.assertEqual(self.logged(), [["Q1", "Q2"]])
        self.send(QUEUED_LOG_MESSAGES)
        self.assertEqual(len(self.logged()), 2)
        self.assertEqual(len(self.logged()[1]), QUEUED_LOG_MESSAGES)
