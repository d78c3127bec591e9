"""
Delivery status notifications (RFC 3464) for mail that failed for good,
and reading the ones other servers send back to us.

A report goes from the null sender (RFC 5321 section 4.5.5) to the
original envelope sender, so that a report that itself fails is dropped
instead of bouncing back and forth.  It carries the human explanation,
the machine-readable C{message/delivery-status} part, and the original
headers (not the body: the sender has it, and returning it doubles the
traffic of a bounce storm).  Only a remote server's own reply is reported
as an C{smtp;} Diagnostic-Code; what TrekMail found itself (no such
domain, a suppressed address, a timeout) is an C{X-TrekMail;} one, the
extension diagnostic type of RFC 3464 section 2.3.6.
"""

import email
import email.policy
import email.utils
import itertools
import re
import secrets
from dataclasses import dataclass
from typing import Tuple

from trekmail import idn
from trekmail.delivery import wire_form

_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _field(value):
    """One header line's worth of printable ASCII."""
    return _UNSAFE.sub("?", " ".join(str(value).split()))


def _shown(address):
    """An address in the report's ASCII: a UTF-8 one in RFC 6533's C{\\x{...}} form rather than lost to "?"."""
    return _field(address) if address.isascii() else idn.embedded_unicode(address)


def _recipient(address):
    """The address type and address of a C{Final-Recipient}: C{utf-8} for a UTF-8 one (RFC 6533 section 3)."""
    return ("rfc822; " if address.isascii() else "utf-8; ") + _shown(address)


def _date(when):
    return email.utils.formatdate(when, usegmt=True)


def original_headers(message):
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_report(hostname, queue_id, envelope, failures, now, message):
    """
    The report's bytes (CRLF line ends).

    @param failures: L{trekmail.delivery.Outcome} for each recipient
        that failed for good; an expired one carries a 4xx code and its
        last error, and is reported with status 4.4.7.
    @param message: the original message, whose header is returned.
    """
    boundary = "=_%s" % (secrets.token_hex(12),)
    lines = []
    for outcome in failures:
        lines.append("<%s>: %s" % (_shown(outcome.recipient), _field(outcome.text) or outcome.code))
    expired = [o for o in failures if not o.permanent]
    if expired:
        intro = "Delivery of your message was given up after repeated temporary failures."
    else:
        intro = "Your message could not be delivered to one or more recipients."
    human = "\r\n".join(
        [
            "This is the mail system at %s." % (_field(hostname),),
            "",
            intro,
            "It will not be retried.  The failing recipients and the reason:",
            "",
        ]
        + lines
    )
    per_message = [
        "Reporting-MTA: dns; %s" % (_field(hostname),),
        "X-Queue-ID: %s" % (_field(queue_id),),
        "Arrival-Date: %s" % (_date(envelope.received_at or now),),
    ]
    if envelope.sender:
        per_message.append("X-Original-Sender: rfc822; %s" % (_field(envelope.sender),))
    per_recipient = []
    for outcome in failures:
        status = outcome.status if outcome.permanent else "4.4.7"
        block = [
            "Final-Recipient: %s" % (_recipient(outcome.recipient),),
            "Action: failed",
            "Status: %s" % (status if status[0] in "45" else "5.0.0",),
        ]
        if outcome.remote:
            block.append("Remote-MTA: dns; %s" % (_field(outcome.remote.split(" ")[0]),))
        if outcome.reply:
            block.append("Diagnostic-Code: smtp; %d %s" % (outcome.code, _field(outcome.text)))
        else:
            block.append("Diagnostic-Code: X-TrekMail; %s" % (_field(outcome.text),))
        block.append("Last-Attempt-Date: %s" % (_date(now),))
        per_recipient.append("\r\n".join(block))
    status_part = "\r\n".join(per_message) + "\r\n\r\n" + "\r\n\r\n".join(per_recipient) + "\r\n"
    subject = "Delivery Status Notification (Failure)" if not expired else "Undelivered Mail: delivery time expired"
    head = "\r\n".join(
        [
            "From: Mail Delivery System <MAILER-DAEMON@%s>" % (_field(hostname),),
            "To: <%s>" % (_field(envelope.sender),),
            "Subject: %s" % (subject,),
            "Date: %s" % (_date(now),),
            "Message-ID: <%s.%s@%s>" % (_field(queue_id), secrets.token_hex(4), _field(hostname)),
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
            'Content-Type: multipart/report; report-type=delivery-status; boundary="%s"' % (boundary,),
        ]
    )
    body = (
        "--%(b)s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%(human)s\r\n\r\n"
        "--%(b)s\r\nContent-Type: message/delivery-status\r\n\r\n%(status)s\r\n"
        "--%(b)s\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ) % {"b": boundary, "human": human, "status": status_part}
    tail = "\r\n--%s--\r\n" % (boundary,)
    return (head + "\r\n\r\n" + body).encode("ascii") + wire_form(original_headers(message)) + tail.encode("ascii")


RETURNED_PARTS = 100
RETURNED_GROUPS = 100
RETURNED_SENDERS = 10
"""
How much of a returned report is looked at: every recipient and sender
it names is checked against the return path's MAC, so a crafted one must
not cost more than a few thousand of them.
"""


@dataclass(frozen=True)
class Group:
    """One recipient's block of a returned report."""

    recipients: Tuple[str, ...]
    """Its C{Final-Recipient} and C{Original-Recipient} addresses."""
    failed: bool
    """C{Action: failed} with a permanent (5.x.x) C{Status}."""
    status: str
    diagnostic: str


@dataclass(frozen=True)
class Returned:
    groups: Tuple[Group, ...]
    senders: Tuple[str, ...]
    """The C{From} addresses of the returned message or headers."""


def returned_report(message):
    """
    A report another server sent us, as a L{Returned}; C{None} when
    C{message} is not a delivery-status report or cannot be read.  What it
    says is only a claim: L{trekmail.queue.returnpath} decides whether it
    is about a message we sent.
    """
    try:
        parsed = email.message_from_bytes(message, policy=email.policy.compat32)
        if parsed.get_content_type() != "multipart/report":
            return None
        if (parsed.get_param("report-type") or "").lower() != "delivery-status":
            return None
        groups, senders = [], []
        for part in itertools.islice(parsed.walk(), RETURNED_PARTS):
            kind = part.get_content_type()
            if kind == "message/delivery-status":
                payload = part.get_payload()
                groups.extend(_group(g) for g in (payload[1:] if isinstance(payload, list) else []))
            elif kind in ("text/rfc822-headers", "message/rfc822", "message/rfc822-headers"):
                senders.extend(_senders(part))
    except Exception:
        return None
    return Returned(tuple(groups[:RETURNED_GROUPS]), tuple(dict.fromkeys(senders))[:RETURNED_SENDERS])


def _address(value):
    """The address of an C{rfc822;} typed field (RFC 3464 section 2.3.2), or C{""}."""
    kind, _, address = (value or "").partition(";")
    address = address.strip().strip("<>")
    return address if kind.strip().lower() == "rfc822" and "@" in address else ""


def _group(fields):
    status = (fields.get("Status") or "").strip()
    action = (fields.get("Action") or "").strip().lower()
    named = (_address(fields.get("Final-Recipient")), _address(fields.get("Original-Recipient")))
    return Group(tuple(dict.fromkeys(a for a in named if a)), action == "failed" and status.startswith("5"),
                 status, _field(fields.get("Diagnostic-Code") or status))


def _senders(part):
    payload = part.get_payload()
    if isinstance(payload, list):
        headers = payload[0] if payload else None
    else:
        headers = email.message_from_string(str(payload), policy=email.policy.compat32)
    if headers is None:
        return []
    return [a for _, a in email.utils.getaddresses(headers.get_all("From") or []) if "@" in a]
