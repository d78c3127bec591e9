"""
Internationalised addresses (RFC 6530, 6531): the one form the realm,
the doors and the relay keep them in.

Domains are kept as A-labels (C{xn--...}), lower-cased, whichever form
they came in: what an SMTPUTF8 client sends as U-labels and what an
ASCII-only client sends as A-labels then name the same mailbox; the
realm's domain column, DNS lookups (MX, DKIM, SPF, MTA-STS), TLS names
and the Maildir path stay ASCII as they always were; and a next hop
without SMTPUTF8 can be given the address unchanged (RFC 6531 section
3.2 asks for A-labels there).  The U-label form is only for people
(L{unicode_domain}).  U-labels are converted by IDNA 2008 with the UTS #46
mapping (the C{idna} package; the standard library's codec is IDNA 2003,
which maps C{ß} to C{ss} and so names another domain).

Local parts cannot be converted: a non-ASCII one is kept in Unicode NFC
(RFC 6530 section 10.1), lower-cased like the ASCII ones, and a message
for it can only go to a next hop that offers SMTPUTF8.
"""

import unicodedata

import idna

MAX_LOCAL_OCTETS = 64
"""RFC 5321 section 4.5.3.1.1, counted in UTF-8 octets (RFC 6531 section 3.3)."""
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'*+/=?^_`{|}~-")
_QCHAR = frozenset(chr(c) for c in range(0x21, 0x7F)) - set("+=\\")
_NOT_TEXT = ("C", "Z")
"""Unicode categories no local part may hold: controls, format, unassigned, and every kind of space."""


class NotAnIDN(ValueError):
    """A domain that is no valid IDNA 2008 name."""


def ascii_domain(name):
    """
    C{"Bücher.Example"} -> C{"xn--bcher-kva.example"}; an ASCII name is
    lower-cased, and its A-labels are checked to decode.

    @raise NotAnIDN: with the reason.
    """
    if name.isascii():
        name = name.lower()
        if "xn--" not in name:
            return name
    try:
        encoded = idna.encode(name, uts46=True).decode("ascii")
        if name.isascii() and encoded != name:
            raise idna.IDNAError("%s is not in the canonical A-label form %s" % (name, encoded))
        return encoded
    except (idna.IDNAError, UnicodeError) as e:
        raise NotAnIDN("not a valid internationalised domain name (%s)" % (e,)) from None


def unicode_domain(name):
    """The U-label form of an A-label domain, for people; the name itself if it does not decode."""
    try:
        return idna.decode(name)
    except (idna.IDNAError, UnicodeError):
        return name


def local_part(local):
    """A local part in the one form kept: NFC, lower-cased."""
    return unicodedata.normalize("NFC", local).lower()


def local_part_problem(local):
    """
    Why C{local} (text) is no dot-atom local part of RFC 6531 section 3.3
    (atext, or any non-ASCII character that is not a control or a space),
    or C{None}.  The caller bounds the length before.
    """
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        return "the local part is longer than %d octets" % (MAX_LOCAL_OCTETS,)
    for atom in local.split("."):
        if not atom:
            return "the local part has an empty part between dots"
        for char in atom:
            if char in _ATEXT:
                continue
            if char.isascii() or unicodedata.category(char)[0] in _NOT_TEXT:
                return "the local part holds %r, which an address cannot" % (char,)
    return None


def embedded_unicode(address):
    """
    C{address} in RFC 6533's C{utf-8-addr-xtext} (section 3): what a
    C{message/delivery-status} part, which is ASCII, can say of a UTF-8
    address, as in C{Final-Recipient: utf-8; \\x{7528}\\x{6237}@xn--fsqu00a.xn--0zwm56d}.
    """
    return "".join(c if c in _QCHAR else "\\x{%X}" % (ord(c),) for c in address)
