"""The one table of SMTP failure replies (trekmail.smtp.replies)."""

from twisted.logger import Logger
from twisted.trial import unittest

from trekmail.queue.interface import SpoolError
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.smtp import replies


class FailedTests(unittest.TestCase):
    log = Logger()

    def test_foreseen_error_is_not_logged(self):
        r = replies.failed("enqueue", SpoolError("disk full"), self.log, "mx")
        self.assertEqual((r.code, r.status, r.text), (451, "4.3.0", "could not store the message, please try again"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_unforeseen_error_gets_the_steps_answer_and_a_traceback(self):
        r = replies.failed("login", ZeroDivisionError(), self.log, "submission")
        self.assertEqual((r.code, r.status), (454, "4.7.0"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_subclass_found_by_ancestry(self):
        class Outage(DirectoryUnavailable):
            pass

        r = replies.failed("recipient", Outage(), self.log, "mx")
        self.assertEqual((r.code, r.status), (451, "4.4.3"))

    def test_error_a_step_has_no_entry_for_is_refused(self):
        self.assertRaises(KeyError, replies.failed, "recipient", ValueError(), self.log, "mx")
