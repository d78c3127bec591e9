"""
Whose name a submitted message may carry (docs/sending-rules.md, "Sender address": "validates the From
address against the mailbox you authenticated with").

Both the envelope sender and the header From must be exactly the logged-in
mailbox, compared without regard to case, and for an internationalised
address in the realm's form (L{trekmail.idn}), so a From written with
U-labels is the mailbox kept with A-labels.  A message with no From, with
two From fields, or with several addresses in its From is refused: any of
them would let a second identity ride along with the authorised one.
"""

import email.utils
import re

from trekmail import idn
from trekmail.policy.gate import Denial

ENVELOPE = "envelope-sender"
HEADER = "header-from"

_HEADER_END = re.compile(rb"\r\n\r\n")
_FROM_FIELD = re.compile(rb"^from[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE)

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = r"{atom}(?:\.{atom})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*".format(atom=_ATOM)
_SIMPLE_FROM = re.compile(
    r'[ \t]*(?:(?:"[^"\\\r\n]*"|[A-Za-z0-9!#$%&\'*+/=?^_`{{|}}~. \t-]*)<({spec})>|({spec}))[ \t]*'.format(spec=_ADDR_SPEC)
)
"""
The forms nearly every client writes (C{a@b}, C{Name <a@b>}, C{"Name" <a@b>}):
recognised without email.utils' general parser, which costs more than the
rest of the submission checks together; anything else goes to that parser.
"""


def envelope_denial(sender, mailbox):
    if sender.lower() == mailbox.lower():
        return None
    return Denial(
        ENVELOPE,
        "sender unauthorised: you are logged in as %s, so MAIL FROM must be <%s>" % (mailbox, mailbox),
    )


def header_section(message):
    """The header fields of a canonical (CRLF) message, ending before the blank line."""
    match = _HEADER_END.search(message)
    if match is None:
        return message
    return message[: match.start() + 2]


def from_addresses(value):
    """The addresses of a From field's (unfolded) value."""
    simple = _SIMPLE_FROM.fullmatch(value)
    if simple is not None:
        return [simple.group(1) or simple.group(2)]
    return [a for _, a in email.utils.getaddresses([value]) if a]


def header_from_denial(message, mailbox):
    fields = _FROM_FIELD.findall(header_section(message))
    if len(fields) != 1:
        return Denial(
            HEADER,
            "sender unauthorised: the message must have exactly one From header (it has %d);"
            " use From: %s" % (len(fields), mailbox),
        )
    value = fields[0].decode("utf-8", "replace").replace("\r\n", "")
    addresses = from_addresses(value)
    if len(addresses) != 1 or not _same(addresses[0], mailbox):
        return Denial(
            HEADER,
            "sender unauthorised: the From header must be the mailbox you logged in as;"
            " use From: %s" % (mailbox,),
        )
    return None


def _same(address, mailbox):
    address = address.lower()
    if address == mailbox.lower():
        return True
    if address.isascii() and "xn--" not in address:
        return False
    local, _, domain = address.rpartition("@")
    try:
        return "%s@%s" % (idn.local_part(local), idn.ascii_domain(domain)) == mailbox.lower()
    except idn.NotAnIDN:
        return False
