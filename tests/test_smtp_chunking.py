"""
BDAT (RFC 3030, trekmail.smtp.chunking) driven over a StringTransport: the
chunk is read by its declared size and never as commands, DATA's size,
budget, deadline and line-ending rules hold, and pipelined chunks behind a
refused one are read and refused too.
"""

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.fakes import FakeQueue, replies
from tests.test_smtp_data_limits import Intake, session

TRANSACTION = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\n"
MESSAGE = b"Subject: t\r\n\r\nhello\r\n"


def bdat(payload, last=True):
    return b"BDAT %d%s\r\n%s" % (len(payload), b" LAST" if last else b"", payload)


class ChunkTests(unittest.TestCase):
    def setUp(self):
        self.intake = Intake(memory_threshold=1000)
        self.server, self.transport, self.queue = session(self.intake)

    def codes(self):
        return [line[:9] for line in replies(self.transport)]

    def test_advertised(self):
        self.server.dataReceived(b"EHLO c\r\n")
        lines = replies(self.transport)
        self.assertIn("CHUNKING", [line[4:] for line in lines])
        self.assertFalse([line for line in lines if "BINARYMIME" in line])

    def test_one_chunk(self):
        self.server.dataReceived(TRANSACTION + bdat(MESSAGE))
        self.assertEqual(self.codes()[-1], "250 2.0.0")
        self.assertEqual(self.queue.messages[0][1], MESSAGE)
        self.assertEqual(self.intake.budget.held, 0)

    def test_chunks_joined_and_commands_inside_are_body(self):
        """A chunk's bytes are body whatever they say: a CRLF.CRLF or an SMTP command inside is not run."""
        first = b"Subject: t\r\n\r\nline\r\n.\r\nRSET\r\n"
        second = b"MAIL FROM:<evil@example.com>\r\n"
        self.server.dataReceived(TRANSACTION + bdat(first, last=False) + bdat(second, last=False) + b"BDAT 0 LAST\r\n")
        self.assertEqual(self.codes()[-3:], ["250 2.0.0", "250 2.0.0", "250 2.0.0"])
        self.assertEqual(len(self.queue.messages), 1)
        self.assertEqual(self.queue.messages[0][1], first + second)

    def test_chunk_split_across_reads(self):
        """The server never reads past the declared size, however the bytes arrive."""
        stream = TRANSACTION + bdat(MESSAGE) + b"NOOP\r\n"
        for i in range(len(stream)):
            self.server.dataReceived(stream[i:i + 1])
        self.assertEqual(self.codes()[-2:], ["250 2.0.0", "250 2.0.0"])
        self.assertEqual(self.queue.messages[0][1], MESSAGE)

    def test_bare_line_ends_canonicalised(self):
        """Bare CR and LF become CRLF, also a CR ending one chunk and an LF starting the next."""
        self.server.dataReceived(TRANSACTION + bdat(b"Subject: t\n\nbare\rcr\r", last=False) + bdat(b"\nend\n"))
        self.assertEqual(self.queue.messages[0][1], b"Subject: t\r\n\r\nbare\r\ncr\r\nend\r\n")

    def test_large_body_goes_to_a_file(self):
        body = b"Subject: t\r\n\r\n" + b"x" * 5000 + b"\r\n"
        self.server.dataReceived(TRANSACTION + b"BDAT %d LAST\r\n" % (len(body),))
        for start in range(0, len(body), 700):
            self.server.dataReceived(body[start:start + 700])
        self.assertEqual(len(self.intake.files), 1)
        self.assertTrue(self.intake.files[0].closed)
        self.assertEqual(self.queue.messages[0][1], body)
        self.assertEqual(self.intake.budget.held, 0)

    def test_bdat_0_last_alone(self):
        """An empty message is the door's to judge, as after an empty DATA."""
        self.server.dataReceived(TRANSACTION + b"BDAT 0 LAST\r\n" + TRANSACTION[8:] + b"DATA\r\n.\r\n")
        self.assertEqual(self.codes()[-5:], ["250 2.0.0", "250 2.1.0", "250 2.1.5", "354 2.0.0", "250 2.0.0"])
        self.assertEqual([m for _, m in self.queue.messages], [b"", b""])

    def test_too_big_discards_the_rest(self):
        """Past the limit nothing more is stored; the pipelined chunks behind get 503, their bytes read, not run."""
        self.server.max_message_size = 100
        big = b"y" * 80
        self.server.dataReceived(TRANSACTION + bdat(big, last=False) + bdat(big, last=False))
        self.assertEqual(self.intake.budget.held, 0)
        self.server.dataReceived(b"BDAT 18 LAST\r\nQUIT\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
        self.assertEqual(self.codes()[-4:], ["250 2.0.0", "552 5.2.3", "503 5.5.1", "250 2.0.0"])
        self.assertEqual(self.queue.messages, [])
        self.assertFalse(self.transport.disconnecting)

    def test_huge_declared_size_is_not_buffered(self):
        self.server.dataReceived(TRANSACTION + b"BDAT 99999999999999999999 LAST\r\n")
        replies(self.transport)
        for _ in range(100):
            self.server.dataReceived(b"z" * 65536)
        self.assertLessEqual(self.intake.budget.held, self.server.max_message_size)
        self.assertEqual(len(self.server._buffer), 0)
        self.assertEqual(self.codes(), [])

    def test_malformed_size_closes(self):
        for line in (b"BDAT", b"BDAT x", b"BDAT 10 FIRST", b"BDAT -1", b"BDAT 1 LAST x", b"BDAT " + b"9" * 21):
            server, transport, queue = session(self.intake)
            server.dataReceived(TRANSACTION + line + b"\r\nRSET\r\n")
            lines = replies(transport)
            self.assertEqual(lines[-1][:9], "501 5.5.4", line)
            self.assertTrue(transport.disconnecting, line)

    def test_without_transaction_the_chunk_is_still_read(self):
        self.server.dataReceived(b"EHLO c\r\n" + bdat(b"RSET\r\n"))
        replies(self.transport)
        self.server.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\n" + bdat(b"QUIT\r\n", last=False))
        self.assertEqual(self.codes(), ["250 2.1.0", "250 2.1.5", "250 2.0.0"])
        self.server.dataReceived(b"RSET\r\n")
        self.assertEqual(self.codes(), ["250 2.0.0"])
        self.assertEqual(self.intake.budget.held, 0)
        self.server.dataReceived(bdat(b"NOOP\r\n"))
        self.assertEqual(self.codes(), ["503 5.5.1"])

    def test_data_after_bdat_and_rcpt_after_bdat(self):
        self.server.dataReceived(TRANSACTION + bdat(b"Subject: t\r\n", last=False))
        replies(self.transport)
        self.server.dataReceived(b"DATA\r\nRCPT TO:<bob@example.com>\r\n" + bdat(b"\r\nbody\r\n"))
        self.assertEqual(self.codes(), ["503 5.5.1", "503 5.5.1", "250 2.0.0"])
        self.assertEqual(self.queue.messages[0][1], b"Subject: t\r\n\r\nbody\r\n")

    def test_bdat_after_data_refused_transaction_still_open(self):
        """DATA then BDAT in the next transaction: each transaction picks its own."""
        self.server.dataReceived(TRANSACTION + b"DATA\r\n" + MESSAGE + b".\r\n"
                                 + b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\n" + bdat(MESSAGE))
        self.assertEqual(self.codes()[-5:], ["354 2.0.0", "250 2.0.0", "250 2.1.0", "250 2.1.5", "250 2.0.0"])
        self.assertEqual([m for _, m in self.queue.messages], [MESSAGE, MESSAGE])

    def test_ehlo_between_chunks_drops_them(self):
        self.server.dataReceived(TRANSACTION + bdat(b"x" * 2000, last=False))
        self.assertEqual(len(self.intake.files), 1)
        self.server.dataReceived(b"EHLO again\r\n" + bdat(MESSAGE))
        self.assertTrue(self.intake.files[0].closed)
        self.assertEqual(self.intake.budget.held, 0)
        self.assertEqual(self.codes()[-1], "503 5.5.1")
        self.assertEqual(self.queue.messages, [])

    def test_disconnect_mid_chunk_frees_everything(self):
        self.server.dataReceived(TRANSACTION + b"BDAT 10000 LAST\r\n" + b"x" * 3000)
        self.server.connectionLost(Failure(Exception("gone")))
        self.assertTrue(self.intake.files[0].closed)
        self.assertEqual(self.intake.budget.held, 0)
        self.assertEqual(self.queue.messages, [])

    def test_replies_wait_for_the_queue(self):
        """Pipelined behind BDAT LAST, the next command is answered only after the 250 for the message."""
        queue = FakeQueue()
        queue.held = []
        server, transport, _ = session(self.intake, queue)
        server.dataReceived(TRANSACTION + bdat(MESSAGE) + b"NOOP\r\n")
        self.assertEqual([line[:3] for line in replies(transport)][-2:], ["250", "250"])  # MAIL and RCPT
        self.assertGreater(self.intake.budget.held, 0)
        queue.held[0][2].callback("Q9")
        self.assertEqual(replies(transport), ["250 2.0.0 OK: queued as Q9", "250 2.0.0 OK"])
        self.assertEqual(self.intake.budget.held, 0)


class LimitTests(unittest.TestCase):
    def test_budget_full_refuses_and_ends_the_transaction(self):
        intake = Intake()
        intake.budget.limit = 10
        intake.budget.take(10)
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + bdat(b"abc", last=False) + bdat(b"def"))
        self.assertEqual([line[:9] for line in replies(transport)][-2:], ["452 4.3.1", "503 5.5.1"])
        self.assertEqual(queue.messages, [])

    def test_budget_running_out_mid_message(self):
        intake = Intake(memory_threshold=100)
        intake.budget.limit = 1000
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + bdat(b"a" * 600, last=False) + bdat(b"b" * 600, last=False) + bdat(b"c"))
        self.assertEqual([line[:9] for line in replies(transport)][-3:], ["250 2.0.0", "452 4.3.1", "503 5.5.1"])
        self.assertEqual(intake.budget.held, 0)

    def test_deadline_runs_from_the_first_chunk_to_last(self):
        clock = Clock()
        intake = Intake(deadline=600)
        server, transport, queue = session(intake, clock=clock)
        server.dataReceived(TRANSACTION + bdat(b"Subject: t\r\n", last=False))
        for _ in range(9):
            clock.advance(60)
            server.dataReceived(bdat(b"X-Drip: 1\r\n", last=False))
        self.assertFalse(transport.disconnecting)
        clock.advance(60)
        self.assertEqual(replies(transport)[-1],
                         "421 4.4.2 the message took too long to arrive, closing the connection")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(intake.budget.held, 0)

    def test_deadline_bounds_a_refused_chunk_too(self):
        clock = Clock()
        server, transport, queue = session(Intake(deadline=600), clock=clock)
        server.dataReceived(b"EHLO c\r\nBDAT 99999999999 LAST\r\n")
        for _ in range(11):
            clock.advance(60)
            server.dataReceived(b"z" * 100)
        self.assertTrue(transport.disconnecting)

    def test_deadline_ends_with_the_transaction(self):
        clock = Clock()
        server, transport, queue = session(Intake(deadline=100), clock=clock)
        server.dataReceived(TRANSACTION + bdat(MESSAGE))
        clock.advance(150)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(queue.messages), 1)
