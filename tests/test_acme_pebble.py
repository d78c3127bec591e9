"""
A certificate from a real ACME server: Debian's C{pebble}, started here
with a TLS pair of our own CA, validating HTTP-01 on our challenge
listener and resolving the domain through a twisted.names server that
answers 127.0.0.1.  The renewal is ordered when the (task.Clock) time
reaches thirty days before expiry, and each pair reaches new TLS
handshakes through the SIGHUP reload.
"""

import functools
import os
import time

from twisted.internet import defer, protocol, reactor, task, threads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.protocols.wire import Echo
from twisted.trial import unittest

from tests.pebble import DOMAIN, Pebble, served
from trekmail import acmeclient, tls
from trekmail.acmerenewal import Challenges, Renewal
from trekmail.reload import Reload
from trekmail.tlsidentity import IdentitySettings, ServerIdentity
from trekmail.workerthreads import WorkerThreads

DAY = 86400.0


class PebbleTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.challenges = Challenges()
        http = reactor.listenTCP(0, self.challenges.site(), interface="127.0.0.1")
        self.addCleanup(http.stopListening)
        pebble = Pebble(self, self.directory)
        yield pebble.start(http.getHost().port)
        self.settings = acmeclient.AcmeSettings(
            directory_url=pebble.directory_url, email="ops@pebble.test", domains=(DOMAIN,),
            account_key=os.path.join(self.directory, "acme", "account.key"),
            pair=os.path.join(self.directory, "acme", "pair.pem"), ca_file=pebble.ca_file, renew_before=30 * DAY)

    @defer.inlineCallbacks
    def test_certificate_obtained_then_renewed_and_served(self):
        identity = ServerIdentity(IdentitySettings(
            certificate=os.path.join(self.directory, "tls", "cert.pem"),
            private_key=os.path.join(self.directory, "tls", "key.pem"),
            hostname=DOMAIN, acme_pair=self.settings.pair))
        listener = reactor.listenTCP(0, TLSMemoryBIOFactory(identity, False, protocol.Factory.forProtocol(Echo)),
                                     interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        self.assertTrue(tls.generated((yield threads.deferToThread(served, listener.getHost().port))))

        worker = WorkerThreads(reactor, 1, "test-acme")
        worker.start()
        self.addCleanup(worker.stop)
        installs = defer.DeferredQueue()
        reload = Reload(reactor, identity)
        clock = task.Clock()
        clock.advance(time.time())
        renewal = Renewal(clock=clock, pair=self.settings.pair, domains=self.settings.domains,
                          renew_before=self.settings.renew_before,
                          order=functools.partial(acmeclient.obtain, self.settings), run=worker.run,
                          installed=lambda: (reload.reload(), installs.put(clock.seconds())),
                          challenges=self.challenges, reactor=reactor)
        renewal.startService()
        self.addCleanup(renewal.stopService)
        clock.advance(0)
        yield installs.get()
        first = yield threads.deferToThread(served, listener.getHost().port)
        self.assertTrue(tls.covers(first, DOMAIN))
        self.assertFalse(tls.generated(first))
        self.assertEqual(self.challenges.pending, {}, "withdrawn once the order is done")

        renew_at = first.not_valid_after_utc.timestamp() - 30 * DAY
        clock.advance(renew_at - clock.seconds() - 1)
        self.assertEqual(installs.pending, [])
        clock.advance(1)
        self.assertEqual((yield installs.get()), renew_at)
        second = yield threads.deferToThread(served, listener.getHost().port)
        self.assertNotEqual(second.serial_number, first.serial_number)
        self.assertTrue(tls.covers(second, DOMAIN))
