"""
The DNS records that let mail, calendar and contacts clients find this
server from nothing but an address: the SRV records of RFC 6186 (with
RFC 8314's C{_submissions}) and RFC 6764, and the C{autoconfig} /
C{autodiscover} names Thunderbird and Outlook try before anything else.
"""

SERVICES = (
    ("_submissions._tcp", "submissions"),
    ("_submission._tcp", "submission"),
    ("_imaps._tcp", "imaps"),
    ("_imap._tcp", "imap"),
    ("_caldavs._tcp", "https"),
    ("_carddavs._tcp", "https"),
)
"""Each SRV label and the L{ClientPorts} field whose port it announces."""

NOT_OFFERED = "0 0 0 ."
"""RFC 6186 section 3.4: a target of "." says the service is not offered at this domain."""


def srv_value(hostname, port):
    return NOT_OFFERED if port is None else "0 1 %d %s." % (port, hostname)


def client_records(domain_name, published):
    """C{(name, type, value)} for C{domain_name}, pointing at L{PublishedNames} C{published}."""
    ports = published.ports
    records = [("%s.%s" % (label, domain_name), "SRV", srv_value(published.hostname, getattr(ports, field)))
               for label, field in SERVICES]
    if ports.https is not None:
        records.append(("_autodiscover._tcp.%s" % (domain_name,), "SRV", srv_value(published.hostname, ports.https)))
        records.extend(("%s.%s" % (name, domain_name), "CNAME", "%s." % (published.hostname,))
                       for name in ("autoconfig", "autodiscover"))
    return records
