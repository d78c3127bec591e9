"""
DNS for the inbound checks: the libraries (pyspf, dkimpy) block, so they
run on worker threads and ask dnspython, pointed at the configured
C{[dns] nameservers} only.  A resolver built with C{configure=False}
never reads C{/etc/resolv.conf}: with no nameserver configured every
lookup is a temporary error (the verdicts say C{temperror} and the mail
is delivered) rather than a question to whatever DNS the host has.
"""

import dns.exception
import dns.nameserver
import dns.resolver


class TemporaryDNSError(Exception):
    """No answer in time, or no server answered: the check is C{temperror}."""


class Lookups:
    """Blocking lookups through C{nameservers}, C{((host, port), ...)}."""

    def __init__(self, nameservers, timeout=5.0):
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
        self._timeout = timeout

    def records(self, name, qtype, timeout=None):
        """The rdata of C{name}'s C{qtype} records; C{[]} for NXDOMAIN or no data."""
        if not self._resolver.nameservers:
            raise TemporaryDNSError("no [dns] nameservers configured")
        try:
            answer = self._resolver.resolve(name, qtype, lifetime=min(timeout or self._timeout, self._timeout),
                                            search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise TemporaryDNSError(str(e)) from None
        except dns.exception.DNSException as e:
            raise TemporaryDNSError(str(e)) from None
        return list(answer.rrset or ())

    def txt(self, name, timeout=None):
        """Each TXT record of C{name} as one byte string (its strings joined, RFC 7208 3.3)."""
        return [b"".join(r.strings) for r in self.records(name, "TXT", timeout)]
