"""
The delivery contract between the queue and the routes that carry mail
away: what the queue hands a route (L{ITransport}, a message in
L{wire_form}), what it gets back (one L{Outcome} per recipient), and the
two ways a route or a signer can fail (L{RouteUnavailable},
L{SigningError}).

It lives in the base layer, below both C{trekmail/queue/} and
C{trekmail/relay/}, so each side imports only this file and neither
imports the other: the queue uses the contract, the relay implements it,
and the wiring (L{trekmail.service}) hands the queue the relay and signer
it built.  Nothing here does I/O.
"""

import re
from dataclasses import dataclass
from typing import Optional

from zope.interface import Interface

_LINE_END = re.compile(rb"\r\n|\r|\n")
_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})\b")


def wire_form(message):
    """
    The one definition of the bytes that are signed and sent: every line
    ending made CRLF, and a final CRLF; not yet dot-stuffed (RFC 5321
    section 4.5.2 is the client's job).
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message


@dataclass(frozen=True)
class Outcome:
    """What became of one recipient of one attempt."""

    recipient: str
    code: int
    text: str
    """The server's reply, or our own explanation; shown in reports."""
    remote: str = ""
    """The host that answered, for the report's Remote-MTA field."""
    reply: bool = False
    """C{code} and C{text} are a server's SMTP reply, not our own finding (a timeout, a DNS answer)."""
    peer: str = ""
    source: str = ""
    """The IP addresses of the server that answered and of our end of that connection, for the mail log."""
    tls: Optional[str] = None
    """The TLS version of that connection (C{TLSv1.3}), or C{None} in the clear."""
    tls_verified: bool = False
    """The server's certificate was checked (a profile's provider), not just used (opportunistic TLS to an MX)."""

    @property
    def delivered(self):
        return 200 <= self.code < 300

    @property
    def permanent(self):
        return 500 <= self.code < 600

    @property
    def status(self):
        """The enhanced status code (RFC 3463), from the reply or the basic code."""
        found = _ENHANCED.match(self.text.encode("utf-8", "replace"))
        if found:
            return "%s.%s.%s" % tuple(g.decode("ascii") for g in found.groups())
        if self.delivered:
            return "2.0.0"
        return "5.0.0" if self.permanent else "4.0.0"


def outcomes(recipients, code, text, remote="", reply=False):
    return [Outcome(r, code, text, remote, reply) for r in recipients]


class ITransport(Interface):
    """
    What the queue asks of a route: hand over one signed message and learn
    what became of each recipient.  The managed MX relay implements it, and
    so does smarthost delivery through a customer's provider profile, so
    the queue's per-message route decision is a lookup, not a branch.
    """

    def deliver(sender, recipients, message, sending_domain=None):
        """
        Send C{message} (bytes in L{wire_form}, already DKIM-signed) from
        C{sender} (C{""} for a report) to C{recipients}.

        @param sending_domain: the hosted L{trekmail.realm.model.Domain}
            the message comes from, or C{None}; the managed relay picks its
            source pool by its age.
        @return: Deferred firing with one L{Outcome} per recipient.  It
            does not fail: a problem reaching the server is a temporary
            outcome.
        """


class RouteUnavailable(Exception):
    """The route names something that cannot deliver now (C{permanent} says if ever)."""

    def __init__(self, message, permanent=False):
        super().__init__(message)
        self.permanent = permanent


class SigningError(Exception):
    """
    A message could not be signed; the text says what failed.  Only
    C{permanent} failures (the message itself) are worth refusing for good:
    a key can be put right by the operator, and the message then waits.
    """

    permanent = False
