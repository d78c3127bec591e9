"""
Where mail for a domain goes (RFC 5321 section 5.1): its MX hosts in
preference order, or the domain itself when it has no MX; each host's
IPv4 addresses.

twisted.mail's MXCalculator returns only the single best host and hides
the difference between "no such domain" and "DNS is failing", which the
queue needs: SERVFAIL or a timeout defers the mail, NXDOMAIN or a null MX
(RFC 7505) bounces it.  So this asks an injected twisted.names resolver
directly.
"""

import ipaddress

from twisted.internet.defer import inlineCallbacks
from twisted.names import client as dns_client
from twisted.names import dns, error


def make_resolver(servers, reactor):
    """The twisted.names resolver of C{servers} (C{[dns] nameservers}: (host, port) pairs), or the system's."""
    if servers:
        return dns_client.Resolver(servers=list(servers), reactor=reactor)
    return dns_client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)


class LookupFailed(Exception):
    """C{permanent} says whether to bounce (True) or retry later (False)."""

    def __init__(self, message, permanent):
        super().__init__(message)
        self.permanent = permanent


def _literal(domain):
    if domain.startswith("[") and domain.endswith("]"):
        try:
            return str(ipaddress.IPv4Address(domain[1:-1]))
        except ValueError:
            return None
    return None


@inlineCallbacks
def mail_hosts(resolver, domain):
    """
    Deferred firing with C{[(host, [address, ...]), ...]} in preference
    order; fails with L{LookupFailed}.
    """
    literal = _literal(domain)
    if literal:
        return [(literal, [literal])]
    try:
        answers, authority, additional = yield resolver.lookupMailExchange(domain)
    except (error.DNSNameError, error.AuthoritativeDomainError):
        raise LookupFailed("5.1.2 domain %s does not exist" % (domain,), True) from None
    except Exception as e:
        raise LookupFailed("4.4.3 DNS lookup of %s failed: %s" % (domain, type(e).__name__), False) from None
    exchanges = sorted(
        (r.payload.preference, str(r.payload.name))
        for r in answers
        if r.type == dns.MX and str(r.name).lower() == domain.lower()
    )
    if any(name in ("", ".") for _, name in exchanges):
        raise LookupFailed("5.1.10 domain %s accepts no mail (null MX)" % (domain,), True)
    glue = _addresses(additional)
    if not exchanges:
        addresses = yield _host_addresses(resolver, domain, {})
        if not addresses:
            raise LookupFailed("5.1.2 domain %s has no MX or address record" % (domain,), True)
        return [(domain, addresses)]
    hosts = []
    temporary = None
    for _, name in exchanges:
        try:
            addresses = yield _host_addresses(resolver, name, glue)
        except LookupFailed as e:
            temporary = e
            continue
        if addresses:
            hosts.append((name, addresses))
    if not hosts:
        raise temporary or LookupFailed("4.4.4 no MX host of %s has an address" % (domain,), False)
    return hosts


def _addresses(records):
    found = {}
    for r in records:
        if r.type == dns.A:
            found.setdefault(str(r.name).lower(), []).append(r.payload.dottedQuad())
    return found


@inlineCallbacks
def _host_addresses(resolver, host, glue):
    literal = _literal(host)
    if literal:
        return [literal]
    try:
        ipaddress.IPv4Address(host)
        return [host]
    except ValueError:
        pass
    if host.lower() in glue:
        return glue[host.lower()]
    try:
        answers, _, _ = yield resolver.lookupAddress(host)
    except (error.DNSNameError, error.AuthoritativeDomainError):
        return []
    except Exception as e:
        raise LookupFailed("4.4.3 DNS lookup of %s failed: %s" % (host, type(e).__name__), False) from None
    return [r.payload.dottedQuad() for r in answers if r.type == dns.A]
