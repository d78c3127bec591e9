"""
The one way both doors read a MAIL FROM / RCPT TO argument.

twisted.mail's L{Address} silently strips source routes and leaves C{%}
hacks, bang paths and a second C{@} for later code to misread, the
classic open-relay holes.  Here a path is accepted only in its plain form
C{<local@domain>} (RFC 5321 4.1.2 Path, without the obsolete A-d-l source
route of 4.1.2 / F.2), with a dot-atom local part and a host name; every
other form raises L{AddressRefused} naming what was wrong, and the door
decides the reply.  In a transaction opened with SMTPUTF8 (RFC 6531) the
local part may hold UTF-8 and the domain U-labels; the domain is made its
A-label form and the local part NFC (L{trekmail.idn}), so that both
spellings of an address name one mailbox.  Without SMTPUTF8 a non-ASCII
address raises L{NeedsSMTPUTF8}.
"""

import re
import unicodedata

from trekmail import idn

MAX_PATH = 256
"""RFC 5321 4.5.3.1.3."""

_ATEXT = rb"[A-Za-z0-9!#$&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rb"^%s+(?:\.%s+)*$" % (_ATEXT, _ATEXT))
_LABEL = rb"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rb"^(?:%s\.)+%s$" % (_LABEL, _LABEL))
_PARAMETER = re.compile(rb"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$")


class PathSyntaxError(ValueError):
    """The argument is not C{FROM:<...>} / C{TO:<...>} at all: a 501."""


class AddressRefused(ValueError):
    """The path is well formed but of a kind this server does not take."""


class NeedsSMTPUTF8(AddressRefused):
    """A non-ASCII address in a transaction whose MAIL did not say SMTPUTF8 (RFC 6531 section 3.4)."""


def split_argument(argument, keyword):
    """
    C{b"FROM:<a@b> SIZE=10"} -> C{(b"<a@b>", {"SIZE": b"10"})}.

    @raise PathSyntaxError: when the keyword, the brackets or a parameter
        is malformed.
    """
    head, colon, rest = argument.partition(b":")
    if not colon or head.strip().upper() != keyword:
        raise PathSyntaxError("expected %s:<address>" % (keyword.decode(),))
    rest = rest.strip()
    if not rest.startswith(b"<"):
        raise PathSyntaxError("the address must be in angle brackets: %s:<name@example.com>" % (keyword.decode(),))
    end = rest.find(b">")
    if end < 0:
        raise PathSyntaxError("unbalanced angle brackets")
    path, words = rest[: end + 1], rest[end + 1 :].split()
    parameters = {}
    for word in words:
        match = _PARAMETER.match(word)
        if match is None:
            raise PathSyntaxError("malformed parameter %r" % (word.decode("ascii", "replace"),))
        parameters[match.group(1).decode("ascii").upper()] = match.group(2)
    return path, parameters


def parse_path(path, allow_null=False, utf8=False):
    """
    C{b"<Alice@Example.COM>"} -> C{"Alice@example.com"} (the domain
    lowered, the local part kept); C{b"<>"} -> C{""} when C{allow_null}.
    With C{utf8} (the transaction's SMTPUTF8), C{"<Ünal@bücher.example>"}
    -> C{"Ünal@xn--bcher-kva.example"}.
    """
    if len(path) > MAX_PATH:
        raise AddressRefused("the address is longer than %d characters" % (MAX_PATH,))
    inner = path[1:-1]
    if not inner:
        if allow_null:
            return ""
        raise AddressRefused("an empty address is not accepted here")
    if inner.startswith(b"@"):
        raise AddressRefused("source routes are not accepted")
    if b'"' in inner or b"\\" in inner:
        raise AddressRefused("quoted local parts are not accepted")
    if inner.count(b"@") != 1:
        raise AddressRefused("an address has exactly one @")
    local, _, domain = inner.partition(b"@")
    if b"%" in local:
        raise AddressRefused("%-hack addresses are not accepted")
    if b"!" in local:
        raise AddressRefused("bang paths are not accepted")
    if domain.startswith(b"["):
        raise AddressRefused("address literals are not accepted")
    if not inner.isascii():
        return _utf8_path(local, domain, utf8)
    if len(local) > 64 or not _DOT_ATOM.match(local):
        raise AddressRefused("the local part is not a plain name")
    return "%s@%s" % (local.decode("ascii"), _domain(domain.decode("ascii")))


def _utf8_path(local, domain, utf8):
    if not utf8:
        raise NeedsSMTPUTF8("a non-ASCII address needs the SMTPUTF8 parameter on MAIL (RFC 6531)")
    try:
        local, domain = local.decode("utf-8"), domain.decode("utf-8")
    except UnicodeDecodeError:
        raise AddressRefused("the address is not UTF-8") from None
    local = unicodedata.normalize("NFC", local)
    problem = idn.local_part_problem(local)
    if problem is not None:
        raise AddressRefused(problem)
    return "%s@%s" % (local, _domain(domain))


def _domain(name):
    """The domain as kept (L{trekmail.idn}: lower-case A-labels), or L{AddressRefused}."""
    try:
        name = idn.ascii_domain(name)
    except idn.NotAnIDN as e:
        raise AddressRefused("the domain is %s" % (e,)) from None
    if len(name) > 253 or not _HOST.match(name.encode("ascii")):
        raise AddressRefused("the domain is not a host name")
    return name
