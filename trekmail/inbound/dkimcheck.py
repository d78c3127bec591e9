"""
DKIM (RFC 6376): every signature of the message, verified by dkimpy
against keys asked of L{Lookups}.
"""

from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from trekmail.inbound.lookups import TemporaryDNSError

MAX_SIGNATURES = 10
"""Signatures past this many are not verified: each costs a lookup and an RSA operation."""


@dataclass(frozen=True)
class DKIMResult:
    result: str
    """C{pass}, C{fail}, C{temperror}, C{permerror} (RFC 8601 2.7.1)."""
    domain: str
    selector: str
    signature: str
    """The first bytes of C{b=}, naming the signature (RFC 6008)."""


def dnsfunc(lookups, missing=None):
    """
    dkimpy's TXT lookup: the first record's bytes or C{None}; a timeout is
    dkimpy's C{DnsTimeoutError}.  Names without a record are added to the
    set C{missing}: dkimpy answers a missing key with C{False}, as it does
    a bad signature, and RFC 8601 2.7.1 tells them apart.
    """
    def txt(name, timeout=5):
        name = (name.decode("ascii") if isinstance(name, bytes) else name).rstrip(".")
        try:
            records = lookups.txt(name, timeout)
        except TemporaryDNSError as e:
            raise dkim.DnsTimeoutError(str(e)) from None
        if not records and missing is not None:
            missing.add(name.lower())
        return records[0] if records else None
    return txt


def _tags(value):
    try:
        return parse_tag_value(value)
    except InvalidTagValueList:
        return {}


def check(lookups, message):
    """One L{DKIMResult} per DKIM-Signature (up to L{MAX_SIGNATURES}); blocking, for a worker thread."""
    try:
        verifier = dkim.DKIM(message)
    except dkim.MessageFormatError:
        return []
    signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"][:MAX_SIGNATURES]
    missing = set()
    lookup = dnsfunc(lookups, missing)
    results = []
    for index, value in enumerate(signatures):
        tags = _tags(value)
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        results.append(DKIMResult(
            _verify(verifier, index, lookup, missing, "%s._domainkey.%s" % (selector.lower(), domain)),
            domain, selector, b"".join(tags.get(b"b", b"").split())[:8].decode("ascii", "replace"),
        ))
    return results


def _verify(verifier, index, lookup, missing, key_name):
    try:
        if verifier.verify(index, dnsfunc=lookup):
            return "pass"
    except dkim.DnsTimeoutError:
        return "temperror"
    except dkim.ValidationError as e:
        # dkimpy raises this one class for a changed body (the signature
        # fails) and for a malformed signature (a permanent error).
        return "fail" if str(e).startswith("body hash mismatch") else "permerror"
    except dkim.DKIMException:
        return "permerror"
    return "permerror" if key_name in missing else "fail"
