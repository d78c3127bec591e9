"""
A realm with everything the sending verbs need, on real sockets: a DNS
server of our own on loopback (records filled in by the test), the
provider stand-in's CA as the smarthost trust root, the database on its
own thread, and an L{Operations} bound to them.
"""

import os

from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.names import client, dns

from tests import support
from tests.delivery_support import Zone, dns_server
from tests.provider import TestCA
from trekmail.admin.operations import Operations, VerbSettings
from trekmail.crypto import SecretKeyring
from trekmail import settings
from trekmail.workerthreads import WorkerThreads
from trekmail.config import Config
from trekmail.realm import database, schema
from trekmail.relay.smarthost import Smarthost

CA = TestCA()


class Site:
    def __init__(self, testcase, extra=""):
        """One query, no retransmission: a slow machine must not leave a second query behind."""
        self.zone = Zone({})
        dns_port = dns_server(testcase, self.zone)
        directory = os.path.abspath(testcase.mktemp())
        os.makedirs(directory)
        ca_path = os.path.join(directory, "provider-ca.pem")
        with open(ca_path, "wb") as f:
            f.write(CA.ca.public_bytes(serialization.Encoding.PEM))
        text = "[dns]\nnameservers = 127.0.0.1:%d\nspf_include = spf.trekmail.test\n" % (dns_port,)
        text += "[smarthost]\nca_file = %s\ntimeout = 10\n" % (ca_path,)
        self.config_path = support.write_config(directory, text + extra)
        self.config = Config.from_file(self.config_path)
        db = database.connect(self.config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        self.database = database.ThreadedDatabase(db, reactor)
        self.database.start()
        testcase.addCleanup(self.database.stop)
        self.smarthost = Smarthost(reactor, "mail.test", trust_root=settings.smarthost_trust(self.config), timeout=10)
        self.keyring = SecretKeyring.load(self.config.secret_key_path)
        hashing = WorkerThreads(reactor, 1, "test-password-hash")
        hashing.start()
        testcase.addCleanup(hashing.stop)
        self.operations = Operations(
            settings=VerbSettings(realm=settings.realm(self.config), queue_dir=self.config.data_path("queue"),
                                  keyring=self.keyring),
            database=self.database, reactor=reactor,
            resolver=client.Resolver(servers=[("127.0.0.1", dns_port)],
                                     reactor=reactor, timeout=(20,)),
            smarthost=self.smarthost,
            hashing=hashing,
        )

    def call(self, verb, **kwargs):
        return self.operations.call(verb, **kwargs)

    def publish(self, domain_dns):
        """Serve exactly the records C{domain dns} asks for."""
        for record in domain_dns:
            key = (record["name"].lower(), getattr(dns, record["type"]))
            self.zone.records.setdefault(key, []).append(_payload(record["type"], record["value"]))

    def set_txt(self, name, values):
        self.zone.records[(name, dns.TXT)] = [_payload("TXT", v) for v in values]

    def db(self, function, *args):
        return self.database.run(function, *args)


def _payload(kind, value):
    if kind == "MX":
        preference, host = value.split()
        return dns.Record_MX(int(preference), host.rstrip("."), ttl=60)
    if kind == "SRV":
        priority, weight, port, target = value.split()
        return dns.Record_SRV(int(priority), int(weight), int(port), target.rstrip("."), ttl=60)
    if kind == "CNAME":
        return dns.Record_CNAME(value.rstrip("."), ttl=60)
    return dns.Record_TXT(*[value[i:i + 255].encode() for i in range(0, len(value), 255)], ttl=60)
