"""
Connection caps for the SMTP and HTTP listeners: a total, and a cap per
client address, counted when a connection is accepted and given back when
it closes.  Without them one address opening idle connections used up the
process's descriptors, and every door (IMAP included) stopped accepting.

The cap sits outside everything else a listener wraps its factory in
(TLS included), so a refused connection costs no handshake and no
protocol instance: it is told why (when the listener speaks in the clear)
and closed at once.  IPv6 clients are counted per /64, the block one
subscriber is usually given, so that a client cannot step around its
cap by changing the low bits of its address; an IPv4-mapped IPv6 address
counts as its IPv4 address.

Each refusal is a C{refused} event of the mail log (L{trekmail.maillog}),
with the reply's code (its lines aggregated per address,
L{trekmail.refusallog}), and each listener counts the connections it
holds (C{open}) for the metrics.
"""

import ipaddress
from collections import Counter

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from trekmail.refusallog import RefusalLog

SMTP_REFUSAL = b"421 4.7.0 too many connections, try again later\r\n"
HTTP_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 60\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n")
REASON = "connections"

log = Logger()


def refusal_code(refusal):
    """The code of our own C{refusal} (C{421 4.7.0}, C{503}), or C{None} for a silent one."""
    if not refusal:
        return None
    words = refusal.split(b" ", 2)
    if words[0].startswith(b"HTTP/"):
        return words[1].decode("ascii")
    return b" ".join(words[:2]).decode("ascii")


def client_key(host):
    """The key a client address is counted under, or C{None} (a UNIX socket: only the total applies)."""
    try:
        address = ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return None
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network((address, 64), strict=False))
    return str(address)


class ConnectionCaps:
    """The count behind one or more listeners (submission's two ports share theirs)."""

    def __init__(self, total, per_address):
        self.total = total
        self.per_address = per_address
        self.held = 0
        self.by_address = Counter()

    def take(self, key):
        """Counts a new connection from C{key}; C{False} when either cap is full."""
        if self.held >= self.total:
            return False
        if key is not None:
            if self.by_address[key] >= self.per_address:
                return False
            self.by_address[key] += 1
        self.held += 1
        return True

    def release(self, key):
        self.held -= 1
        if key is not None:
            self.by_address[key] -= 1
            if self.by_address[key] <= 0:
                del self.by_address[key]


class _Counted(ProtocolWrapper):
    def __init__(self, factory, wrapped, key):
        super().__init__(factory, wrapped)
        self.key = key

    def connectionLost(self, reason):
        self.factory.caps.release(self.key)
        self.factory.open -= 1
        super().connectionLost(reason)


class _Refused(Protocol):
    def __init__(self, refusal):
        self.refusal = refusal

    def connectionMade(self):
        if self.refusal:
            self.transport.write(self.refusal)
        self.transport.loseConnection()


class CappedFactory(WrappingFactory):
    """
    Wraps a listener's factory: a connection past C{caps} is answered
    C{refusal} (nothing on a listener whose first bytes are TLS) and closed.
    C{listener} and C{protocol} name it in the refusal's log event;
    C{clock} (the reactor) times the aggregation of those lines.
    """

    def __init__(self, wrapped, caps, refusal, *, clock, listener=None, protocol=None):
        super().__init__(wrapped)
        self.caps = caps
        self.refusal = refusal
        self.listener = listener
        self.protocol = protocol
        self.open = 0
        self.refusals = RefusalLog(log, clock, protocol=protocol, listener=listener, code=refusal_code(refusal),
                                   reason=REASON)

    def stopFactory(self):
        self.refusals.flush()
        super().stopFactory()

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        key = client_key(host)
        if not self.caps.take(key):
            self.refusals.refused(key, host)
            return _Refused(self.refusal)
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            self.caps.release(key)
            return None
        self.open += 1
        return _Counted(self, wrapped, key)
