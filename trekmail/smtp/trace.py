"""
The C{Received:} trace field every door writes on a message it accepts
(RFC 5321 section 4.4, RFC 5322 section 3.6.7):

    Received: from client.example ([192.0.2.1])
            by mail.example.net (TrekMail) with ESMTPSA id 0190f3c2a1b5e3c9d20f
            for <bob@example.com>; Sat, 21 Nov 2026 12:00:00 +0000

The HELO name is the client's own text: it goes into the field only when
it is a domain name or an address literal; anything else (spaces, CR, LF,
controls, parentheses) could end the field early and inject headers of
its own, so the peer's address stands in for it and a sanitised, bounded
copy goes into a comment where nothing it holds can mean syntax.  No
reverse DNS lookup is made: the address literal is what we know.
"""

import ipaddress
from datetime import datetime, timezone
from email.utils import format_datetime

MAX_HELO_COMMENT = 64
"""Characters of a HELO that is not a name kept in the comment."""
_MAX_DOMAIN = 255
_LABEL_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_COMMENT_SAFE = frozenset(range(0x21, 0x7F)) - frozenset(b"()\\")


def protocol(extended, tls, authenticated, utf8=False):
    """
    The C{with} keyword: RFC 5321's SMTP or ESMTP, with RFC 3848's S (TLS)
    and A (AUTH); UTF8SMTP for a transaction with SMTPUTF8 (RFC 6531 section 4.3).
    """
    if not extended:
        return "SMTP"
    return ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if authenticated else "")


def address_literal(address):
    """C{[192.0.2.1]} or C{[IPv6:2001:db8::1]} (RFC 5321 section 4.1.3); C{None} if not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return "[%s]" % (ip.ipv4_mapped,)
        return "[IPv6:%s]" % (ip.compressed,)
    return "[%s]" % (ip,)


def _is_domain(name):
    if not name or len(name) > _MAX_DOMAIN:
        return False
    for label in name.split(b"."):
        if not 0 < len(label) <= 63 or label[:1] == b"-" or label[-1:] == b"-":
            return False
        if not _LABEL_CHARS.issuperset(label):
            return False
    return True


def _helo_literal(helo):
    if not (helo.startswith(b"[") and helo.endswith(b"]")) or len(helo) > 64:
        return None
    inner = helo[1:-1].decode("ascii", "replace")
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
        if ":" not in inner:
            return None
    return address_literal(inner)


def _comment(helo):
    kept = bytes(c if c in _COMMENT_SAFE else 0x3F for c in helo[:MAX_HELO_COMMENT])
    return kept.decode("ascii") + ("..." if len(helo) > MAX_HELO_COMMENT else "")


def received(helo, client_address, hostname, with_protocol, queue_id, recipients, when):
    """
    The C{Received:} field, folded and ending in CRLF, as bytes.

    @param helo: the HELO/EHLO argument as the client sent it (bytes).
    @param recipients: the envelope recipients; named (C{for}) only when
        there is exactly one, as several would tell each recipient who else
        received a Bcc copy.
    @param when: POSIX time of acceptance.
    """
    helo = (helo or b"").strip()
    peer = address_literal(client_address) or "[%s]" % (_comment(client_address.encode("ascii", "replace")),)
    if _is_domain(helo):
        origin = "from %s (%s)" % (helo.decode("ascii"), peer)
    else:
        literal = _helo_literal(helo)
        if literal is not None:
            origin = "from %s (%s)" % (literal, peer)
        else:
            origin = "from %s (%s) (HELO %s)" % (peer, peer, _comment(helo) or "missing")
    if isinstance(hostname, bytes):
        hostname = hostname.decode("ascii")
    lines = [
        "Received: " + origin,
        "\tby %s (TrekMail) with %s id %s" % (hostname, with_protocol, queue_id),
    ]
    date = format_datetime(datetime.fromtimestamp(when, timezone.utc))
    if len(recipients) == 1:
        lines.append("\tfor <%s>; %s" % (recipients[0], date))
    else:
        lines[-1] += ";"
        lines.append("\t" + date)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def stamper(session, recipients):
    """
    The C{trace} a door hands to C{IMessageQueue.enqueue} with a message
    accepted in C{session} (an L{trekmail.smtp.server.ESMTPServer}): the
    field names the queue id, which only the queue assigns.
    """
    with_protocol = protocol(session.extended, session.startedTLS, session.authenticated, session.utf8)
    when = session.clock.seconds()
    helo = session._helo[0]
    return lambda queue_id: received(helo, session.client_address, session.host, with_protocol,
                                     queue_id, recipients, when)
