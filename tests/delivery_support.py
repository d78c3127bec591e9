"""
Doubles and loopback servers for the queue and relay tests: a clock that
runs "thread" work at once, a database double, an ESMTP sink that records
what it receives (and can refuse), and a DNS server answering from a dict.
"""

import os

from twisted.internet import defer, protocol, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import ISSLTransport
from twisted.mail import smtp
from twisted.names import common, dns, error, server
from twisted.internet.defer import maybeDeferred
from zope.interface import implementer

from trekmail.mailstore import maildir_path


def delivered(root, address):
    """
    The messages in C{address}'s C{new/}, in delivery order: by the
    per-process counter of their names (C{Q<n>}), since the microseconds
    field is not zero-padded and sorts wrongly as text.
    """
    new = os.path.join(maildir_path(root, address), "new")
    if not os.path.isdir(new):
        return []
    contents = []
    for name in sorted(os.listdir(new), key=lambda name: int(name.split("Q", 1)[1].split(".", 1)[0])):
        with open(os.path.join(new, name), "rb") as f:
            contents.append(f.read())
    return contents


class SyncReactor:
    """A task.Clock (passed in) that also runs C{callFromThread} work at once."""

    def __init__(self, clock):
        self._clock = clock

    def __getattr__(self, name):
        return getattr(self._clock, name)

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class SyncPool:
    """L{trekmail.workerthreads.WorkerThreads} that run work at once on the calling thread."""

    def start(self):
        pass

    def stop(self):
        pass

    def run(self, function, *args):
        return maybeDeferred(function, *args)

    def map(self, function, items):
        return [function(item) for item in items]


class FakeDatabase:
    """L{ThreadedDatabase} on the calling thread."""

    def __init__(self, db):
        self.db = db

    def run(self, function, *args, **kwargs):
        return defer.maybeDeferred(function, self.db, *args, **kwargs)


# -- an ESMTP sink on loopback


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, sink, sender, recipient):
        self.sink = sink
        self.sender = sender
        self.recipient = recipient
        self.lines = []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        self.session.messages += 1
        self.sink.tls_used.append(self.tls)
        data = b"".join(line + b"\r\n" for line in self.lines)
        self.sink.received.append((self.sender, self.recipient, data))
        for waiter in self.sink.waiters:
            if not waiter.called and len(self.sink.received) >= waiter.count:
                waiter.callback(self.sink.received)
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, sink, server):
        self.sink = sink
        self.server = server
        self.sender = None

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        self.sender = str(origin)
        return origin

    def validateTo(self, user):
        address = str(user.dest)
        code = self.sink.refuse.get(address)
        if code is not None:
            raise smtp.SMTPBadRcpt(address, code, "%d.1.1 refused by the sink" % (code // 100,))
        sender = self.sender
        tls = ISSLTransport.providedBy(self.server.transport)

        def message():
            built = _Message(self.sink, sender, address)
            built.tls = tls
            built.session = self.server
            return built

        return message


class _SinkServer(smtp.ESMTP):
    def __init__(self, sink):
        super().__init__(contextFactory=sink.tls)
        self.sink = sink
        self.delivery = _Delivery(sink, self)

    messages = 0

    def connectionMade(self):
        self.sink.sessions.append(self)
        self.sink.connections += 1
        self.sink.peers.append(self.transport.getPeer().host)
        super().connectionMade()


class Sink(protocol.Factory):
    """
    Records C{(sender, recipient, bytes)} per accepted recipient.
    C{refuse} maps an address to the RCPT reply code it gets.
    """

    def __init__(self, tls=None):
        self.tls = tls
        self.received = []
        self.refuse = {}
        self.waiters = []
        self.connections = 0
        self.sessions = []
        """Each connection's server; its C{messages} counts what it received."""
        self.peers = []
        self.tls_used = []
        self.port = None

    def buildProtocol(self, addr):
        p = _SinkServer(self)
        p.factory = self
        p.host = b"sink.test"
        return p

    def listen(self, testcase):
        port = reactor.listenTCP(0, self, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        self.port = port.getHost().port
        return self.port

    def wait_for(self, count):
        d = defer.Deferred()
        d.count = count
        if len(self.received) >= count:
            d.callback(self.received)
        else:
            self.waiters.append(d)
        return d


# -- a DNS server on loopback


class Zone(common.ResolverBase):
    """
    Answers from C{records}: {(name, type): [payload, ...]}.  Names in
    C{servfail} get SERVFAIL; names not mentioned at all get NXDOMAIN.
    """

    def __init__(self, records, servfail=()):
        super().__init__()
        self.records = {(name.lower(), kind): list(p) for (name, kind), p in records.items()}
        self.servfail = set(servfail)

    def _lookup(self, name, cls, kind, timeout):
        name = (name.decode("ascii") if isinstance(name, bytes) else name).lower()
        if name in self.servfail:
            return defer.fail(RuntimeError("refusing to answer"))
        if not any(n == name for n, _ in self.records):
            return defer.fail(error.DomainError(name))
        answers = [
            dns.RRHeader(name, kind, dns.IN, 60, payload, auth=True)
            for payload in self.records.get((name, kind), [])
        ]
        return defer.succeed((answers, [], []))


def remote_test_zone():
    """A zone whose only mail domain, remote.test, has its MX on 127.0.0.1 (a L{Sink} on [relay] mx_port)."""
    return Zone({
        ("remote.test", dns.MX): [dns.Record_MX(10, b"mx.remote.test")],
        ("mx.remote.test", dns.A): [dns.Record_A("127.0.0.1")],
    })


def txt_record(value):
    """A TXT record of C{value}, in strings of up to 255 bytes (RFC 1035 section 3.3.14), as a DKIM key needs."""
    data = value.encode("ascii")
    return dns.Record_TXT(*[data[i:i + 255] for i in range(0, len(data), 255)], ttl=60)


def dns_server(testcase, zone):
    """Serve C{zone} on 127.0.0.1 over UDP and TCP on one port; returns the port."""
    factory = server.DNSServerFactory(authorities=[zone])
    for _ in range(50):
        tcp = reactor.listenTCP(0, factory, interface="127.0.0.1")
        port = tcp.getHost().port
        try:
            udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
        except CannotListenError:
            tcp.stopListening()
            continue
        testcase.addCleanup(tcp.stopListening)
        testcase.addCleanup(udp.stopListening)
        return port
    raise AssertionError("no port free for both UDP and TCP")
