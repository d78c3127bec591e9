"""
Test doubles for the SMTP doors: a queue that records (and can fail or
hold), a directory answering from a dict (and able to hold or fail), and
a StringTransport that can start TLS.
"""

from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from trekmail.queue.interface import IMessageQueue, SpoolError
from trekmail.realm.errors import DirectoryUnavailable


@implementer(IMessageQueue)
class FakeQueue:
    def __init__(self):
        self.messages = []
        self.traces = []
        """What each C{trace} gave, kept apart so the messages are as the door passed them."""
        self.fail = False
        self.held = None

    def enqueue(self, envelope, message, trace=None):
        if self.fail:
            return defer.fail(SpoolError("disk full"))
        if trace is not None:
            self.traces.append(trace("Q%d" % (len(self.messages) + 1,)))
        if self.held is not None:
            d = defer.Deferred()
            self.held.append((envelope, message, d))
            return d
        self.messages.append((envelope, message))
        return defer.succeed("Q%d" % (len(self.messages),))


class FakeDirectory:
    """C{domains} and C{mailboxes} map names to any non-None fact."""

    def __init__(self, domains=(), mailboxes=()):
        self.domains = {d: ("domain", d) for d in domains}
        self.mailboxes = {m: ("mailbox", m) for m in mailboxes}
        self.held = None
        self.unavailable = False

    def _answer(self, value):
        if self.unavailable:
            return defer.fail(DirectoryUnavailable("down"))
        if self.held is not None:
            d = defer.Deferred()
            self.held.append((d, value))
            return d
        return defer.succeed(value)

    def domain(self, name):
        return self._answer(self.domains.get(name))

    def mailbox(self, address):
        return self._answer(self.mailboxes.get(address))

    def release(self):
        held, self.held = self.held, None
        for d, value in held:
            d.callback(value)


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tls_started_with = None

    def startTLS(self, context):
        self.tls_started_with = context


def replies(transport):
    """The reply lines written so far, as text, and clear the transport."""
    lines = transport.value().decode("utf-8").split("\r\n")
    transport.clear()
    return [line for line in lines if line]
