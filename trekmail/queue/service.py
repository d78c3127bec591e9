"""
Builds the queue and its delivery machinery from the configuration, and
runs it as a service: recovery of the spool on start, the scheduler, the
suppression list, and the worker threads for fsync, Maildir writes and
DKIM signatures.
"""

from concurrent.futures import ThreadPoolExecutor

from twisted.application import service
from twisted.internet import ssl
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from trekmail.crypto import SecretKeyring
from trekmail.queue.delivery import Deliverer, Router
from trekmail.queue.maildir import MaildirWriter
from trekmail.queue.manager import MessageQueue
from trekmail.queue.retry import RetryPolicy
from trekmail.queue.returnpath import KEY_INFO, ReturnPaths
from trekmail.queue.spool import Spool, SpoolLayout
from trekmail.queue.suppression import Suppressions
from trekmail.relay.dkim import Signer
from trekmail.relay.managed import ManagedRelay, SourcePools
from trekmail.relay.mx import make_resolver

log = Logger()


class QueueService(service.Service):
    """
    Owns the queue's threads.  C{queue} is the L{IMessageQueue} that the
    submission and MX listeners hand messages to; C{router} is where a
    provider-profile transport is plugged in (C{router.profiles}).
    """

    def __init__(self, config, reactor, database, directory, resolver=None, tls_context=None, keyring=None):
        hostname = config.get("server", "hostname")
        keyring = keyring if keyring is not None else SecretKeyring.load(config.secret_key_path)
        self.return_paths = ReturnPaths(lambda: keyring.derive(KEY_INFO), hostname, reactor)
        self.workers = ThreadPool(minthreads=1, maxthreads=8, name="trekmail-queue")
        self.syncers = ThreadPoolExecutor(8, thread_name_prefix="trekmail-fsync")
        self.spool = Spool(SpoolLayout(config.data_path("queue")), reactor, self.workers, syncers=self.syncers)
        self.suppressions = Suppressions(database, reactor, config.get("queue", "suppress_after"))
        self.relay = ManagedRelay(
            reactor,
            resolver if resolver is not None else make_resolver(config, reactor),
            hostname,
            port=config.get("relay", "mx_port"),
            pools=SourcePools(config.get("relay", "source_pools"), reactor),
            tls_context=tls_context if tls_context is not None else ssl.CertificateOptions(),
            connections_per_destination=config.get("queue", "connections_per_destination"),
            return_paths=self.return_paths,
        )
        self.router = Router(self.relay)
        self.mailboxes = MaildirWriter(config.data_dir, hostname, reactor, self.syncers)
        self.deliverer = Deliverer(
            directory, self.router, Signer(config.data_dir), self.suppressions,
            reactor, self.workers, self.mailboxes,
        )
        self.queue = MessageQueue(
            self.spool, self.deliverer, self.suppressions, RetryPolicy.from_config(config),
            reactor, hostname, concurrency=config.get("queue", "concurrency"), return_paths=self.return_paths,
        )
        self._reactor = reactor

    def startService(self):
        super().startService()
        self.workers.start()
        self.spool.start()
        self.mailboxes.start()
        self.suppressions.start()
        d = self.queue.start()
        d.addErrback(lambda f: log.failure("queue recovery failed", f))
        return d

    def stopService(self):
        super().stopService()
        self.queue.stop()
        self.suppressions.stop()
        d = self.relay.stop()
        d.addBoth(lambda _: (
            self.spool.stop(), self.mailboxes.stop(), self.workers.stop(), self.syncers.shutdown(wait=False)
        ))
        return d
