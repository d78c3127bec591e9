"""
A real C{twistd -n trekmail} killed with SIGKILL while clients are
submitting: after a restart, every message that got a C{250} is
delivered to the sink (relayed through MX records from a DNS server
started by the test).
"""

import smtplib
import threading

from twisted.internet import defer, reactor, task, threads
from twisted.names import dns
from twisted.trial import unittest

from tests import support
from tests.delivery_support import Sink, Zone, dns_server
from tests.server_process import ServerProcess, free_port
from tests.smtp_site import PASSWORD, client_context
from trekmail.cli import WallClock
from trekmail.config import Config
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail import settings

CLIENTS = 4
ENOUGH = 60


class CrashTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        self.sink = Sink()
        sink_port = self.sink.listen(self)
        dns_port = dns_server(self, Zone({
            ("remote.test", dns.MX): [dns.Record_MX(10, b"mx.remote.test")],
            ("mx.remote.test", dns.A): [dns.Record_A("127.0.0.1")],
        }))
        self.port = free_port()
        path = support.write_config(
            self.mktemp(),
            "[relay]\nmx_port = %d\n[dns]\nnameservers = 127.0.0.1:%d\n[queue]\nretry_intervals = 1\n"
            % (sink_port, dns_port),
            submissions="tcp:%d:interface=127.0.0.1" % (self.port,),
        )
        config = Config.from_file(path)
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        admin = Administration(db, settings.realm(config), WallClock())
        account = admin.account_add("owner@example.net", "agency", verified=True)
        admin.domain_add("example.com", account.id)
        admin.mailbox_add("alice@example.com", PASSWORD)
        db.close()
        self.server = ServerProcess(self, path)

    def clients(self, acked, stop):
        """Submit until C{stop} is set or the server dies; C{acked} gets each token that got 250."""

        def run(number):
            sequence = 0
            try:
                c = smtplib.SMTP_SSL("127.0.0.1", self.port, context=client_context(), timeout=20)
                c.login("alice@example.com", PASSWORD)
                while not stop.is_set():
                    token = "c%d-%d" % (number, sequence)
                    sequence += 1
                    message = (
                        "From: alice@example.com\r\nTo: bob@remote.test\r\nSubject: %s\r\n\r\n"
                        "token %s\r\n%s" % (token, token, "line of text\r\n" * 50)
                    )
                    c.sendmail("alice@example.com", ["bob@remote.test"], message.encode())
                    acked.append(token)
            except (OSError, smtplib.SMTPException):
                return

        return [threads.deferToThread(run, n) for n in range(CLIENTS)]

    @defer.inlineCallbacks
    def wait_until(self, condition, timeout=60):
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError("timed out")
            yield task.deferLater(reactor, 0.05, lambda: None)

    def delivered(self):
        return {data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
                for _, _, data in self.sink.received}

    @defer.inlineCallbacks
    def test_sigkill_while_accepting_loses_nothing(self):
        """
        The sink defers everything until the restart, so every accepted
        message must have come back from the spool, not from memory.
        """
        self.sink.refuse["bob@remote.test"] = 451
        yield self.server.start([self.port])
        acked = []
        stop = threading.Event()
        running = self.clients(acked, stop)
        yield self.wait_until(lambda: len(acked) >= ENOUGH)
        self.server.kill()
        stop.set()
        yield defer.gatherResults(running)
        accepted = list(acked)
        self.assertGreaterEqual(len(accepted), ENOUGH)
        self.assertEqual(self.sink.received, [])
        del self.sink.refuse["bob@remote.test"]
        yield self.server.start([self.port])
        yield self.wait_until(lambda: set(accepted) <= self.delivered())
        self.assertEqual(set(accepted) - self.delivered(), set())
