"""
What one DATA may hold (trekmail.smtp.data): memory up to a threshold and a
temporary file past it, one budget of bytes in flight for the process, and
a deadline for the whole transaction however steadily the client drips.
"""

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from trekmail.smtp.data import DataBudget, DataIntake
from trekmail.smtp.mx import MXFactory

TRANSACTION = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\n"
HEADER = b"Subject: t\r\n\r\n"


class Intake(DataIntake):
    """Remembers the temporary files it hands out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.files = []

    def spool_file(self):
        spool = super().spool_file()
        self.files.append(spool)
        return spool


def session(intake, queue=None, clock=None):
    queue = queue or FakeQueue()
    factory = MXFactory(
        directory=FakeDirectory(["example.com"], ["bob@example.com"]),
        queue=queue,
        clock=clock or Clock(),
        hostname="mx.test",
        tls_options=None,
        intake=intake,
    )
    server = factory.buildProtocol(None)
    transport = TLSStringTransport()
    server.makeConnection(transport)
    replies(transport)
    return server, transport, queue


class SpoolTests(unittest.TestCase):
    def test_small_body_stays_in_memory(self):
        intake = Intake(memory_threshold=1000)
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + b"DATA\r\n" + HEADER + b"x" * 500 + b"\r\n.\r\n")
        self.assertEqual(replies(transport)[-1][:3], "250")
        self.assertEqual(intake.files, [])

    def test_large_body_goes_to_a_file_and_arrives_whole(self):
        intake = Intake(memory_threshold=1000)
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + b"DATA\r\n")
        body = HEADER + b"".join(b"line %d\r\n..dot\r\n" % (i,) for i in range(2000))
        for start in range(0, len(body), 777):
            server.dataReceived(body[start:start + 777])
        self.assertEqual(len(intake.files), 1)
        self.assertGreater(intake.budget.held, 1000)
        server.dataReceived(b".\r\n")
        self.assertEqual(replies(transport)[-1][:3], "250")
        self.assertEqual(queue.messages[0][1], body.replace(b"\r\n..", b"\r\n."))
        self.assertTrue(intake.files[0].closed)
        self.assertEqual(intake.budget.held, 0)

    def test_disconnect_mid_data_frees_file_and_budget(self):
        intake = Intake(memory_threshold=100)
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + b"DATA\r\n" + b"y" * 5000)
        self.assertEqual(intake.budget.held, 2 + 5000 - 4)  # the virtual CRLF in, the last four bytes held back
        server.connectionLost(Failure(Exception("gone")))
        self.assertTrue(intake.files[0].closed)
        self.assertEqual(intake.budget.held, 0)
        self.assertEqual(queue.messages, [])

    def test_budget_held_until_the_queue_answers(self):
        intake = Intake()
        queue = FakeQueue()
        queue.held = []
        server, transport, _ = session(intake, queue)
        server.dataReceived(TRANSACTION + b"DATA\r\n" + HEADER + b"hello\r\n.\r\n")
        self.assertEqual(intake.budget.held, len(b"\r\n" + HEADER + b"hello\r\n"))
        queue.held[0][2].callback("Q1")
        self.assertEqual(intake.budget.held, 0)


class BudgetTests(unittest.TestCase):
    def test_data_refused_while_the_budget_is_full(self):
        intake = Intake(budget=DataBudget(10))
        intake.budget.take(10)
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + b"DATA\r\n")
        self.assertEqual(replies(transport)[-1],
                         "452 4.3.1 insufficient system storage for messages in transit, try again later")
        self.assertEqual(server.mode, "COMMAND")

    def test_transactions_together_stay_within_the_budget(self):
        intake = Intake(budget=DataBudget(10000), memory_threshold=100)
        first, first_transport, queue = session(intake)
        second, second_transport, _ = session(intake, queue)
        first.dataReceived(TRANSACTION + b"DATA\r\n" + HEADER + b"a" * 8000)
        second.dataReceived(TRANSACTION + b"DATA\r\n" + b"b" * 8000)
        self.assertLessEqual(intake.budget.held, 10000)
        second.dataReceived(b"\r\n.\r\n")
        self.assertEqual(replies(second_transport)[-1][:10], "452 4.3.1 ")
        first.dataReceived(b"\r\n.\r\n")
        self.assertEqual(replies(first_transport)[-1][:3], "250")
        self.assertEqual([len(m) for _, m in queue.messages], [len(HEADER) + 8002])
        self.assertEqual(intake.budget.held, 0)
        self.assertTrue(all(f.closed for f in intake.files))
        second.dataReceived(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n" + HEADER + b"c\r\n.\r\n")
        self.assertEqual([line[:3] for line in replies(second_transport)], ["250", "250", "354", "250"])


class DeadlineTests(unittest.TestCase):
    def test_a_dripping_client_is_cut_off_at_the_deadline(self):
        intake = Intake(memory_threshold=10, deadline=1800)
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + b"DATA\r\n")
        replies(transport)
        for _ in range(1799 // 60):
            server.clock.advance(60)
            server.dataReceived(b"drip drip\r\n")
        self.assertFalse(transport.disconnecting)
        server.clock.advance(60)
        self.assertEqual(replies(transport),
                         ["421 4.4.2 the message took too long to arrive, closing the connection"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(intake.budget.held, 0)
        self.assertTrue(intake.files[0].closed)
        server.dataReceived(b".\r\n")
        self.assertEqual(queue.messages, [])

    def test_deadline_ends_with_the_transaction(self):
        intake = Intake(deadline=100)
        server, transport, queue = session(intake)
        server.dataReceived(TRANSACTION + b"DATA\r\n" + HEADER + b"x\r\n.\r\n")
        server.clock.advance(150)
        self.assertEqual(replies(transport)[-1][:3], "250")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(server.clock.getDelayedCalls()[0].getTime(), server.timeout)
