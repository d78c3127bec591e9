"""
A DNS server for the relay benchmark, on 127.0.0.1 only: every name has
A 127.0.0.1 and MX 10 mx.<name>, so the relay's MX lookup for any
recipient domain leads to the smtp-sink on [relay] mx_port.  TXT and
other types get an empty answer (no SPF, DMARC or DNSBL data).

    .venv/bin/python bench/dnsd.py PORT
"""

import sys

from twisted.internet import defer, reactor
from twisted.names import dns, server


class Everything:
    def query(self, query, timeout=None):
        name = query.name.name
        answers = []
        if query.type in (dns.A, dns.ALL_RECORDS):
            answers.append(dns.RRHeader(name, dns.A, ttl=3600, payload=dns.Record_A("127.0.0.1", 3600)))
        if query.type in (dns.MX, dns.ALL_RECORDS):
            answers.append(dns.RRHeader(name, dns.MX, ttl=3600, payload=dns.Record_MX(10, b"mx." + name, 3600)))
        return defer.succeed((answers, [], []))


def main():
    port = int(sys.argv[1])
    factory = server.DNSServerFactory(authorities=[Everything()])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
