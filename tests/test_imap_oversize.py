"""
An APPEND whose non-synchronising literal is over the limit is answered
C{NO [TOOBIG]} and every byte of the literal is read and thrown away
(RFC 7888 section 4): none of it may run as a command, whatever it holds.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.imap_site import Site
from tests.test_imap_session import raw


class RefusedLiteralTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()

    @defer.inlineCallbacks
    def test_refused_literal_is_not_run_as_commands(self):
        size = 8 * 1024 * 1024
        line = b"x NOOP " + b"y" * 990 + b"\r\n"
        injected = b"z1 CREATE Injected\r\n"
        payload = injected + line * ((size - len(injected)) // len(line))
        payload += b"w" * (size - len(payload))

        def work():
            client = self.site.connect()
            tag = client._new_tag()
            client.send(tag + b" APPEND INBOX {%d+}\r\n" % size)
            client.send(payload)
            client.send(b"\r\n")
            answer = client.readline()
            after = raw(client, b"NOOP")
            listing = raw(client, b'LIST "" "*"')
            return answer, after, listing

        answer, after, listing = yield self.site.in_thread(work)
        self.assertIn(b"NO [TOOBIG]", answer)
        self.assertEqual(after[0], [])
        self.assertTrue(after[1].endswith(b"OK NOOP completed"), after)
        self.assertNotIn(b"Injected", b"".join(listing[0]))
