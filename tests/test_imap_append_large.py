"""
APPEND of messages larger than the pipelining bound (trekmail/imap/parser.py
MAX_PIPELINE): the transport was paused while the literal filled the buffer
and never resumed, so an attachment over half a megabyte could not be saved.
"""

import threading

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import Site, message
from trekmail.imap import message as mime
from trekmail.imap import parser


class LargeAppendTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_two_megabytes_over_tls_and_parsed_off_the_reactor(self):
        site = Site(self, appendlimit=8 * 1024 * 1024)
        site.account()
        body = ("x" * 76 + "\r\n") * (2 * 1024 * 1024 // 78)
        data = message(subject="big", body=body)
        self.assertGreater(len(data), 4 * parser.MAX_PIPELINE)
        parsed_on = []
        structures = mime.structures

        def recording(raw):
            parsed_on.append(threading.current_thread() is threading.main_thread())
            return structures(raw)

        self.patch(mime, "structures", recording)

        def session():
            client = site.connect()
            appended = client.append("INBOX", None, None, data)
            client.select("INBOX")
            fetched = client.fetch("1", "(BODY.PEEK[])")
            client.logout()
            return appended, fetched

        (status, _), (_, answer) = yield site.in_thread(session)
        self.assertEqual(status, "OK")
        self.assertEqual(answer[0][1], data)
        self.assertEqual(parsed_on[:1], [False])

    def test_backlog_leaves_out_the_literal_being_read(self):
        class Handler:
            def literal_wanted(self, line, size, synchronising):
                return True

        framer = parser.Framer(Handler())
        framer.feed(b"a APPEND INBOX {2000000}\r\n" + b"x" * 1000000)
        self.assertIsNone(framer.next_command())
        self.assertEqual(framer.backlog(), 0)
        framer.feed(b"x" * 1000000 + b"\r\nb NOOP\r\n")
        self.assertEqual(framer.backlog(), len(b"\r\nb NOOP\r\n"))
