"""
The metrics endpoint of a real C{twistd -n trekmail} with two IMAP
processes: scraped over 127.0.0.1 before and after a submission with
smtplib, IMAP logins with imaplib (one served by the other process, whose
figures must reach the one endpoint) and a connection refused over the
MX's per-address cap; the counters move by what was done.
"""

import imaplib
import re
import smtplib
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from tests.server_process import ServerProcess, free_port
from tests.support import client_context, example_server, write_config

PASSWORD = "correct horse"


def scrape(port):
    """The endpoint's samples: {(name, sorted labels): value}; call in a thread."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port,), timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
        text = response.read().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def submit(port):
    with smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.example", context=client_context(),
                          timeout=30) as c:
        c.login("alice@example.com", PASSWORD)
        c.sendmail("alice@example.com", ["alice@example.com"], b"From: alice@example.com\r\n\r\nhi\r\n")


def imap_logins(port):
    """One login that succeeds (its connection kept, so the next is placed in the other process) and one that fails."""
    held = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    held.login("alice@example.com", PASSWORD)
    other = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        other.login("alice@example.com", "wrong")
    except imaplib.IMAP4.error:
        pass
    else:
        raise AssertionError("a wrong password logged in")
    return held, other


def over_the_cap(port):
    """Two connections to the MX from one address whose cap is one: the held one, and the second's reply."""
    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert held.recv(1024).startswith(b"220 ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as refused:
        return held, refused.recv(1024)


class ScrapeTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_counters_move_with_traffic(self):
        ports = {name: free_port() for name in ("submissions", "mx", "imap", "metrics")}
        path = write_config(self.mktemp(), "[imap]\nprocesses = 2\ntrusted_networks = 127.0.0.0/8\n"
                                           "[mx]\nmax_connections_per_ip = 1\n",
                            **{name: "tcp:%d:interface=127.0.0.1" % port for name, port in ports.items()})
        example_server(path, password=PASSWORD)
        server = ServerProcess(self, path)
        yield server.start(ports.values())
        yield server.wait_for_log("IMAP process 1 started")
        before = yield threads.deferToThread(scrape, ports["metrics"])
        self.assertEqual(sample(before, "trekmail_messages_accepted_total", listener="submissions"), 0)
        self.assertEqual(sample(before, "trekmail_queue_messages", state="new"), 0)
        self.assertIn(("trekmail_imap_connections", (("process", "1"),)), before)

        yield threads.deferToThread(submit, ports["submissions"])
        clients = yield threads.deferToThread(imap_logins, ports["imap"])
        self.addCleanup(lambda: [c.shutdown() for c in clients])
        held, reply = yield threads.deferToThread(over_the_cap, ports["mx"])
        self.addCleanup(held.close)
        self.assertTrue(reply.startswith(b"421 4.7.0 "), reply)

        expected = {
            ("trekmail_messages_accepted_total", (("listener", "submissions"),)): 1,
            ("trekmail_deliveries_total", (("outcome", "delivered"), ("route", "local"))): 1,
            ("trekmail_delivery_delay_seconds_count", (("outcome", "delivered"),)): 1,
            ("trekmail_local_deliveries_total", ()): 1,
            ("trekmail_logins_total", (("outcome", "ok"), ("protocol", "smtp"))): 1,
            ("trekmail_logins_total", (("outcome", "ok"), ("protocol", "imap"))): 1,
            ("trekmail_logins_total", (("outcome", "failed"), ("protocol", "imap"))): 1,
            ("trekmail_refusals_total", (("code", "421 4.7.0"), ("listener", "mx"), ("protocol", "smtp"),
                                         ("reason", "connections"))): 1,
        }
        deadline = reactor.seconds() + 30
        while True:
            after = yield threads.deferToThread(scrape, ports["metrics"])
            moved = {key: after.get(key, 0) - before.get(key, 0) for key in expected}
            if moved == expected or reactor.seconds() > deadline:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(moved, expected, server.log())
        self.assertEqual(sample(after, "trekmail_connections_open", listener="mx"), 1)
        self.assertEqual([sample(after, "trekmail_imap_connections", process=p) for p in "01"], [1, 1])
        self.assertEqual(sample(after, "trekmail_queue_messages", state="new"), 0)
        self.assertRegex(server.log(), re.escape('refused smtp mx [127.0.0.1] "421 4.7.0" connections'))
        self.assertNotIn('"GET /metrics', server.log())
