"""
Builds the queue and its delivery machinery from L{QueueSettings}, and
runs it as a service: recovery of the spool on start, the scheduler, the
suppression list, and the worker threads for fsync, Maildir writes and
DKIM signatures.  The managed relay and the DKIM signer come from the
wiring (L{trekmail.service.build_queue}): the queue knows them only through
L{trekmail.delivery}.
"""

from dataclasses import dataclass

from twisted.application import service
from twisted.logger import Logger

from trekmail.queue.delivery import Deliverer, Router
from trekmail.queue.maildir import MaildirWriter
from trekmail.queue.maildirclaim import RealmClaim, create_freely
from trekmail.queue.manager import MessageQueue
from trekmail.queue.retry import RetryPolicy
from trekmail.queue.spool import Spool
from trekmail.queue.spoolformat import SpoolLayout
from trekmail.queue.suppression import Suppressions
from trekmail.workerthreads import WorkerThreads

log = Logger()


@dataclass(frozen=True)
class QueueSettings:
    """The queue's part of the settings, read by the wiring (L{trekmail.service.build_queue})."""

    hostname: str
    """C{[server] hostname}: our name in Received fields, reports and return paths."""
    queue_dir: str
    maildir_root: str
    """The data directory the local mailboxes' Maildirs live under."""
    suppress_after: int
    retry: RetryPolicy
    concurrency: int
    realm_database: str | None = None
    """The sqlite realm whose lifecycle verbs move Maildirs (L{trekmail.queue.maildirclaim}); None with LDAP."""


class QueueService(service.Service):
    """
    Owns the queue's threads.  C{queue} is the L{IMessageQueue} that the
    submission and MX listeners hand messages to.

    @param relay: the managed route, an L{trekmail.delivery.ITransport}
        with C{stop()}; it is stopped with the queue.
    @param signer: the DKIM signer the L{Deliverer} asks.
    @param return_paths: the L{trekmail.queue.returnpath.ReturnPaths} the
        relay signs bounce addresses with and reports are checked against.
    @param profiles: the provider-profile transports, for L{Router}.
    """

    def __init__(self, settings, *, reactor, database, directory, relay, signer, return_paths, profiles=None):
        self.return_paths = return_paths
        self.workers = WorkerThreads(reactor, 8, "trekmail-queue")
        self.syncers = WorkerThreads(reactor, 8, "trekmail-fsync")
        self.spool = Spool(SpoolLayout(settings.queue_dir), reactor, self.workers, syncers=self.syncers)
        self.suppressions = Suppressions(database, reactor, settings.suppress_after)
        self.relay = relay
        self.router = Router(self.relay, profiles)
        claim = create_freely if settings.realm_database is None else RealmClaim(settings.realm_database)
        self.mailboxes = MaildirWriter(settings.maildir_root, settings.hostname, reactor, syncers=self.syncers,
                                       claim=claim)
        self.deliverer = Deliverer(
            directory=directory,
            router=self.router,
            signer=signer,
            suppressions=self.suppressions,
            reactor=reactor,
            workers=self.workers,
            mailboxes=self.mailboxes,
        )
        self.queue = MessageQueue(
            spool=self.spool,
            deliverer=self.deliverer,
            suppressions=self.suppressions,
            policy=settings.retry,
            clock=reactor,
            hostname=settings.hostname,
            concurrency=settings.concurrency,
            return_paths=self.return_paths,
        )
        self._reactor = reactor

    def startService(self):
        super().startService()
        self.workers.start()
        self.syncers.start()
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
            self.spool.stop(), self.mailboxes.stop(), self.workers.stop(), self.syncers.stop()
        ))
        return d
