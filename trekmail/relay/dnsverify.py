"""
C{trekmail domain verify}: do a domain's published records let its mail
authenticate?  (docs/sending-rules.md, "Why mail is not sending" check 2, and "SMTP profiles".)

Required for C{Active}: an SPF record that includes our configured
include, and a DKIM TXT record whose key is the one we sign with.  DMARC,
the MX, and the SPF include of each external provider the domain sends
through only warn: recipient servers judge them, and a domain that is not
verified still sends.  The lookups go through a twisted.names resolver
passed in, so tests answer from their own DNS server.

The judging (L{judge}) is a pure function of the answers, apart from the
lookups (L{lookup_all}), so each rule is testable without a network.
"""

from dataclasses import dataclass

from twisted.internet import defer
from twisted.names import dns, error

from trekmail.realm import dkimkeys

OK = "ok"
WARN = "warn"
FAIL = "fail"


@dataclass(frozen=True)
class RecordCheck:
    record: str
    """C{SPF}, C{DKIM}, C{DMARC}, C{MX}."""
    name: str
    status: str
    found: str
    fix: str
    """What to publish or change; empty when all is well."""


@dataclass(frozen=True)
class Expectations:
    domain: str
    spf_include: str
    dkim_name: str
    dkim_public_key: str
    mx_host: str
    dmarc_record: str
    provider_includes: tuple = ()
    """SPF includes of the external providers this domain sends through."""
    pending_dkim: tuple = ()
    """
    C{(name, where to publish, TXT value)} of each DKIM selector waiting
    for DNS to show it (docs/dkim.md); in CNAME mode the record is
    published in the operator's zone, and looked up through the CNAME.
    """


class LookupFailed(Exception):
    pass


def _txt_values(answers):
    values = []
    for answer in answers:
        if answer.type == dns.TXT:
            values.append(b"".join(answer.payload.data).decode("utf-8", "replace"))
    return values


@defer.inlineCallbacks
def _lookup(resolver, kind, name):
    method = resolver.lookupText if kind == "TXT" else resolver.lookupMailExchange
    try:
        answers, _, _ = yield method(name)
    except (error.DomainError, error.AuthoritativeDomainError):
        return []
    except Exception as e:
        return LookupFailed("%s lookup of %s failed: %s" % (kind, name, e.__class__.__name__))
    if kind == "TXT":
        return _txt_values(answers)
    return [str(a.payload.name).lower().rstrip(".") for a in answers if a.type == dns.MX]


def lookup_txt(resolver, name):
    """A Deferred of the TXT values of C{name}: empty if it has none, a L{LookupFailed} if DNS did not answer."""
    return _lookup(resolver, "TXT", name)


@defer.inlineCallbacks
def lookup_all(resolver, expected):
    """The answers L{judge} needs, keyed by (type, name)."""
    wanted = [
        ("TXT", expected.domain),
        ("TXT", expected.dkim_name),
        ("TXT", "_dmarc.%s" % (expected.domain,)),
        ("MX", expected.domain),
    ] + [("TXT", name) for name, _, _ in expected.pending_dkim]
    results = yield defer.gatherResults([_lookup(resolver, kind, name) for kind, name in wanted])
    return dict(zip(wanted, results))


def _dkim_key(value):
    tags = {}
    for part in value.split(";"):
        key, sep, tag_value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(tag_value.split())
    return tags.get("p")


def _spf_check(expected, answer):
    name = expected.domain
    publish = "publish TXT %s \"v=spf1 include:%s -all\"" % (name, " include:".join(
        (expected.spf_include,) + tuple(expected.provider_includes)))
    if isinstance(answer, LookupFailed):
        return [RecordCheck("SPF", name, FAIL, "", "%s; check the domain's name servers" % (answer,))]
    records = [v for v in answer if v.lower().startswith("v=spf1")]
    if not records:
        return [RecordCheck("SPF", name, FAIL, "", "no SPF record: " + publish)]
    if len(records) > 1:
        return [RecordCheck("SPF", name, FAIL, " | ".join(records),
                            "%d SPF records (receivers treat that as an error): merge them into one" % len(records))]
    record = records[0]
    includes = {w.split(":", 1)[1].lower() for w in record.split() if w.lower().lstrip("+").startswith("include:")}
    checks = []
    if expected.spf_include.lower() not in includes:
        checks.append(RecordCheck("SPF", name, FAIL, record,
                                  "add include:%s to the SPF record" % (expected.spf_include,)))
    else:
        checks.append(RecordCheck("SPF", name, OK, record, ""))
    for include in expected.provider_includes:
        if include.lower() not in includes:
            checks.append(RecordCheck(
                "SPF", name, WARN, record,
                "this domain sends through a provider whose SPF include %s is missing: add include:%s,"
                " or recipients may see SPF failures (DMARC can still pass via DKIM)" % (include, include),
            ))
    return checks


def _dkim_check(expected, answer):
    name = expected.dkim_name
    publish = "publish TXT %s \"%s\"" % (name, dkimkeys.txt_value(expected.dkim_public_key))
    if isinstance(answer, LookupFailed):
        return RecordCheck("DKIM", name, FAIL, "", "%s; check the domain's name servers" % (answer,))
    keys = [(v, _dkim_key(v)) for v in answer if _dkim_key(v) is not None]
    if not keys:
        return RecordCheck("DKIM", name, FAIL, " | ".join(answer), "no DKIM key: " + publish)
    shown = shows_key(answer, expected.dkim_public_key)
    if shown is not None:
        return RecordCheck("DKIM", name, OK, shown, "")
    return RecordCheck("DKIM", name, FAIL, keys[0][0],
                       "the published key is not the one this server signs with: " + publish)


def shows_key(answer, public_key):
    """The TXT value of a L{_lookup} C{answer} that publishes C{public_key}, or C{None}."""
    if isinstance(answer, LookupFailed):
        return None
    for value in answer:
        if _dkim_key(value) == public_key:
            return value
    return None


def _pending_dkim_check(name, publish_at, value, answer):
    """A new key only warns: mail is signed with the active one until DNS shows it."""
    shown = shows_key(answer, _dkim_key(value))
    if shown is not None:
        return RecordCheck("DKIM", name, OK, shown, "")
    return RecordCheck("DKIM", name, WARN, "" if isinstance(answer, LookupFailed) else " | ".join(answer),
                       "a new key waits for this record before signing switches to it: publish TXT %s \"%s\""
                       % (publish_at, value))


def _dmarc_check(expected, answer):
    name = "_dmarc.%s" % (expected.domain,)
    if isinstance(answer, LookupFailed):
        return RecordCheck("DMARC", name, WARN, "", str(answer))
    records = [v for v in answer if v.lower().replace(" ", "").startswith("v=dmarc1")]
    if not records:
        return RecordCheck("DMARC", name, WARN, "",
                           "no DMARC record (strongly recommended): publish TXT %s \"%s\"" % (name, expected.dmarc_record))
    policy = [p.strip().lower() for p in records[0].split(";") if p.strip().lower().startswith("p=")]
    if policy == ["p=none"]:
        return RecordCheck("DMARC", name, WARN, records[0],
                           "p=none protects nothing and some receivers reject weak DMARC: consider p=quarantine")
    return RecordCheck("DMARC", name, OK, records[0], "")


def _mx_check(expected, answer):
    name = expected.domain
    if isinstance(answer, LookupFailed):
        return RecordCheck("MX", name, WARN, "", str(answer))
    if expected.mx_host.lower() in answer:
        return RecordCheck("MX", name, OK, " ".join(answer), "")
    return RecordCheck("MX", name, WARN, " ".join(answer),
                       "mail for %s is not routed here: publish MX %s \"10 %s.\"" % (name, name, expected.mx_host))


def judge(expected, answers):
    """Every record's verdict, in the order a customer fixes them."""
    checks = _spf_check(expected, answers[("TXT", expected.domain)])
    checks.append(_dkim_check(expected, answers[("TXT", expected.dkim_name)]))
    checks.append(_dmarc_check(expected, answers[("TXT", "_dmarc.%s" % (expected.domain,))]))
    checks.append(_mx_check(expected, answers[("MX", expected.domain)]))
    checks.extend(_pending_dkim_check(name, publish_at, value, answers[("TXT", name)])
                  for name, publish_at, value in expected.pending_dkim)
    return checks


def verified(checks):
    return all(c.status != FAIL for c in checks)
