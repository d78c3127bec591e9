"""
SPF (RFC 7208) of the envelope sender and of the HELO name, by pyspf.

pyspf resolves through its module-level C{spf.DNSLookup} only, so that
is replaced once, here, by a function asking the L{Lookups} of the check
running on the calling thread: a worker thread checks one message at a
time, and a lookup outside a check is a temporary error, never a
question to the system's DNS.
"""

import threading
from dataclasses import dataclass

import spf

from trekmail.inbound.lookups import TemporaryDNSError

_current = threading.local()


def _lookup(name, qtype, strict=True, timeout=20):
    lookups = getattr(_current, "lookups", None)
    if lookups is None:
        raise spf.TempError("DNS lookup outside an inbound check")
    try:
        rdata = lookups.records(name, qtype, timeout)
    except TemporaryDNSError as e:
        raise spf.TempError("DNS " + str(e)) from None
    if qtype in ("A", "AAAA"):
        return [((name, qtype), r.address) for r in rdata]
    if qtype == "MX":
        return [((name, qtype), (r.preference, r.exchange)) for r in rdata]
    if qtype == "PTR":
        return [((name, qtype), r.target.to_text(True)) for r in rdata]
    if qtype in ("TXT", "SPF"):
        return [((name, qtype), r.strings) for r in rdata]
    return []


spf.DNSLookup = _lookup


@dataclass(frozen=True)
class SPFResult:
    result: str
    """C{pass}, C{fail}, C{softfail}, C{neutral}, C{none}, C{temperror} or C{permerror}."""
    identity: str
    """The checked address (C{smtp.mailfrom}) or HELO name (C{smtp.helo})."""
    domain: str


def _check(client_ip, identity, helo):
    result, _, _ = spf.query(i=client_ip, s=identity, h=helo, querytime=20).check()
    return result


def check(lookups, client_ip, sender, helo):
    """
    C{(mailfrom, helo)} L{SPFResult}s; blocking, for a worker thread.  The
    null sender is checked as C{postmaster@HELO} (RFC 7208 2.4).
    """
    _current.lookups = lookups
    try:
        helo_result = SPFResult(_check(client_ip, "postmaster@" + helo, helo), helo, helo)
        if sender:
            mailfrom = SPFResult(_check(client_ip, sender, helo), sender, sender.rpartition("@")[2].lower())
        else:
            mailfrom = SPFResult(helo_result.result, "postmaster@" + helo, helo.lower())
        return mailfrom, helo_result
    finally:
        _current.lookups = None
