"""
DMARC (RFC 7489): the RFC5322.From domain's published policy, and
whether a passing SPF or DKIM identity aligns with that domain.
Organizational domains come from the Public Suffix List bundled with
publicsuffixlist (read once, never fetched).
"""

import email.parser
import email.policy
import email.utils
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from trekmail.inbound.lookups import TemporaryDNSError

_suffixes = PublicSuffixList()
_header_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class DMARCResult:
    result: str
    """C{pass}, C{fail}, C{none}, C{temperror} or C{permerror}."""
    header_from: str
    policy: str = "none"
    """The policy to apply when C{result} is C{fail}: C{none}, C{quarantine} or C{reject}."""


def organizational_domain(domain):
    domain = domain.lower().rstrip(".")
    return _suffixes.privatesuffix(domain) or domain


def header_from_domain(message):
    """
    The one domain of the message's From field, or C{None} when there is
    not exactly one From field with exactly one address (RFC 7489 6.6.1).
    """
    fields = _header_parser.parsebytes(message).get_all("From") or []
    if len(fields) != 1:
        return None
    addresses = [a for _, a in email.utils.getaddresses([str(fields[0])]) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return addresses[0].rpartition("@")[2].lower().rstrip(".") or None


def parse_record(text):
    """The tags of a DMARC record, or C{None} when it is not one (RFC 7489 6.3: C{v=DMARC1} first)."""
    tags = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
        elif part.strip():
            return None
    if text.split(";", 1)[0].replace(" ", "") != "v=DMARC1":
        return None
    return tags


def _record(lookups, domain):
    records = []
    for raw in lookups.txt("_dmarc." + domain):
        text = raw.decode("ascii", "replace")
        if text.lstrip().startswith("v=DMARC1"):
            records.append(parse_record(text))
    return records[0] if len(records) == 1 and records[0] is not None else None


def _aligned(identity, domain, mode):
    if mode == "s":
        return identity == domain
    return organizational_domain(identity) == organizational_domain(domain)


def _policy(value):
    return value if value in ("none", "quarantine", "reject") else None


def check(lookups, message, spf_mailfrom, dkim_results):
    """L{DMARCResult} of C{message}; blocking, for a worker thread."""
    domain = header_from_domain(message)
    if domain is None:
        return DMARCResult("permerror", "")
    organizational = organizational_domain(domain)
    try:
        tags = _record(lookups, domain)
        if tags is None and organizational != domain:
            tags = _record(lookups, organizational)
    except TemporaryDNSError:
        return DMARCResult("temperror", domain)
    if tags is None:
        return DMARCResult("none", domain)
    policy = _policy(tags.get("p"))
    if policy is None:
        return DMARCResult("permerror", domain)
    if domain != organizational and _policy(tags.get("sp")):
        policy = tags["sp"]
    aligned = (
        spf_mailfrom.result == "pass" and _aligned(spf_mailfrom.domain, domain, tags.get("aspf", "r"))
    ) or any(
        d.result == "pass" and _aligned(d.domain, domain, tags.get("adkim", "r")) for d in dkim_results
    )
    return DMARCResult("pass" if aligned else "fail", domain, policy)
