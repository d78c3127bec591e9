"""
Replacing the certificate under a running C{twistd -n trekmail} with two
IMAP processes: SIGHUP reloads it in both, IMAP IDLE sessions over TLS
survive and are still told of new mail, new connections get the new pair.
"""

import imaplib
import os
import signal
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.imap_site import message
from tests.server_process import ServerProcess, free_port
from tests.support import client_context, example_server, write_config
from tests.test_imap_processes_e2e import until
from trekmail import tls
from trekmail.durable import replace_private
from trekmail.queue.maildir import deliver_batch

PASSWORD = "correct horse"


def der(pem):
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class ReloadUnderIdleTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.port = free_port()
        path = write_config(self.mktemp(), "[imap]\nprocesses = 2\n",
                            imaps="tcp:%d:interface=127.0.0.1" % self.port)
        self.config = example_server(path, password=PASSWORD)
        self.server = ServerProcess(self, path)
        yield self.server.start([self.port])
        yield self.server.wait_for_log("trekmail started")

    def connect(self):
        return imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=client_context(), timeout=10)

    def idle(self):
        """A session in IDLE on INBOX: (client, tag, the certificate it was served)."""
        client = self.connect()
        client.login("alice@example.com", PASSWORD)
        client.select("INBOX")
        tag = client._new_tag()
        client.send(tag + b" IDLE\r\n")
        assert client.readline().startswith(b"+"), "no continuation for IDLE"
        return client, tag, client.sock.getpeercert(binary_form=True)

    @staticmethod
    def finish_idle(client, tag):
        """Wait for the EXISTS of the new message, then DONE: the lines seen."""
        seen = [client.readline()]
        client.send(b"DONE\r\n")
        while not seen[-1].startswith(tag):
            seen.append(client.readline())
        client.logout()
        return seen

    def fresh_certificates(self, count):
        """
        The certificates C{count} connections held open together are
        served: they are placed on both processes, so the other one is
        serving (and has its SIGHUP handler) afterwards.
        """
        clients = [self.connect() for _ in range(count)]
        try:
            return [c.sock.getpeercert(binary_form=True) for c in clients]
        finally:
            for c in clients:
                c.shutdown()

    @defer.inlineCallbacks
    def test_sighup_reloads_in_every_process_and_idle_survives(self):
        with open(self.config.get("tls", "certificate"), "rb") as f:
            old = der(f.read())
        sessions = []
        for _ in range(2):
            sessions.append((yield threads.deferToThread(self.idle)))
        self.assertEqual([seen for _, _, seen in sessions], [old, old])

        cert_pem, key_pem = tls.self_signed("mail.test")
        replace_private(self.config.get("tls", "private_key"), key_pem, 0o600)
        replace_private(self.config.get("tls", "certificate"), cert_pem, 0o644)
        os.kill(self.server.process.pid, signal.SIGHUP)
        yield until(lambda: self.server.log().count("certificates reloaded") == 2,
                    "both processes reloaded\n" + self.server.log())

        self.assertEqual(deliver_batch(self.config.data_dir, "mail.test",
                                       [("alice@example.com", "bob@remote.test", message())], time.time), [None])
        for client, tag, _ in sessions:
            seen = yield threads.deferToThread(self.finish_idle, client, tag)
            self.assertIn(b"* 1 EXISTS\r\n", seen)
            self.assertTrue(seen[-1].startswith(tag + b" OK"), seen)
        self.assertEqual((yield threads.deferToThread(self.fresh_certificates, 4)), [der(cert_pem)] * 4)
        self.assertNotIn("Traceback", self.server.log())

    @defer.inlineCallbacks
    def test_broken_files_keep_the_current_pair(self):
        with open(self.config.get("tls", "certificate"), "rb") as f:
            old = der(f.read())
        self.assertEqual((yield threads.deferToThread(self.fresh_certificates, 2)), [old] * 2)
        with open(self.config.get("tls", "certificate"), "wb") as f:
            f.write(b"half a certificate")
        os.kill(self.server.process.pid, signal.SIGHUP)
        yield until(lambda: self.server.log().count("certificates not reloaded") == 2,
                    "both processes kept their pair\n" + self.server.log())
        self.assertEqual((yield threads.deferToThread(self.fresh_certificates, 2)), [old] * 2)
