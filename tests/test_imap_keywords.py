"""
A keyword created by one session while another session's FETCH waits on
the disk must be announced (C{* FLAGS}) to the second session before any
FETCH response that shows it (RFC 3501 7.2.6); imaptest's state checking
caught the server getting this wrong.
"""

import threading

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.imap_site import Site, message
from tests.test_imap_session import raw
from trekmail.imap.folder import Folder


class KeywordAnnouncementTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()
        self.site.deliver("alice@example.com", message("one"))

    @defer.inlineCallbacks
    def test_new_keyword_announced_before_fetch_shows_it(self):
        reading = threading.Event()
        gate = defer.Deferred()
        original = Folder.read

        def held_read(folder, *args, **kwargs):
            d = original(folder, *args, **kwargs)
            if gate.called:
                return d
            reactor.callLater(0, reading.set)
            return gate.addCallback(lambda _: d)

        self.patch(Folder, "read", held_read)

        def work():
            reader, writer = self.site.connect(), self.site.connect()
            reader.select("INBOX")
            writer.select("INBOX")
            tag = reader._new_tag()
            reader.send(tag + b" FETCH 1 (BODY[])\r\n")
            assert reading.wait(10), "the FETCH never read the message"
            untagged, done = raw(writer, b"STORE 1 +FLAGS ($Fresh)")
            assert done.endswith(b"OK Store completed"), done
            reactor.callFromThread(gate.callback, None)
            lines = []
            while True:
                line = reader.readline()
                lines.append(line)
                if line.startswith(tag + b" "):
                    return lines

        lines = yield self.site.in_thread(work)
        response = b"".join(lines)
        announce = response.find(b"* FLAGS (")
        self.assertNotEqual(announce, -1, response)
        self.assertIn(b"$Fresh", response[announce:].split(b"\r\n")[0])
        self.assertLess(announce, response.find(b"$Fresh"), response)
