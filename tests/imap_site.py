"""
An IMAP server on real loopback sockets with real TLS, for tests that
drive it with imaplib in a thread: the implicit-TLS and STARTTLS
listeners (the factories built by L{trekmail.service}'s own builder), a
real sqlite realm, the Maildir store with its index, and a task.Clock for
timeouts (the sockets run on the real reactor).
"""

import imaplib
import os
import socket

from twisted.cred.portal import Portal
from twisted.internet import inotify, reactor, threads
from twisted.internet.task import Clock

from tests import support
from tests.support import TrackingFactoryMixin, client_context
from trekmail.imap.sessions import Sessions
from trekmail.service import IMAP_LISTENERS, Components, imap_factories, served_factory
from trekmail.imap.limits import ConnectionLimits
from trekmail.imap.server import IMAPFactory, MailUserRealm
from trekmail.imap.store import MailStore
from trekmail.mailstore import maildir_path

PASSWORD = "correct horse"


class TrackingFactory(TrackingFactoryMixin, IMAPFactory):
    pass


class Site:
    def __init__(self, testcase, per_address=20, total=25000, appendlimit=1024 * 1024, watch=True,
                 trusted_networks="", make_cluster=None, realm=None):
        """
        C{make_cluster(limits)} gives this site a role among several IMAP
        processes (L{trekmail.imap.cluster}); C{realm} (another site's
        C{(config, admin, clock)}) makes it one more process of that site,
        with that site's C{[imap]} keys (C{appendlimit},
        C{trusted_networks}: the text of C{[imap] trusted_networks}).
        """
        self.testcase = testcase
        self.realm = realm or support.realm(testcase, extra=(
            "[imap]\nappend_limit = %d\ntrusted_networks = %s\n" % (appendlimit, trusted_networks)) + support.NO_DNS)
        self.config, self.admin, _ = self.realm
        self.clock = Clock()
        self.clock.advance(support.NOON)
        self.components = Components(self.config, reactor, clock=self.clock)
        self.database = self.components.database
        self.database.start()
        testcase.addCleanup(self.database.stop)
        self.components.hashing.start()
        testcase.addCleanup(self.components.hashing.stop)
        self.directory = self.components.directory
        portal = Portal(MailUserRealm(), [self.components.checker])
        notifier = None
        if watch:
            notifier = inotify.INotify(reactor)
            notifier.startReading()
            testcase.addCleanup(notifier.loseConnection)
        self.store = MailStore(self.config.data_dir, reactor, notifier)
        self.store.start()
        testcase.addCleanup(self.store.stop)
        self.limits = ConnectionLimits(per_address, total)
        self.ports = {}
        self.factories = {}

        def serving(cluster):
            self.factories = imap_factories(self.components, portal=portal, store=self.store, limits=self.limits,
                                            cluster=cluster, sessions=Sessions(), factory_class=TrackingFactory)
            for name, implicit in IMAP_LISTENERS:
                factory = self.factories[name]
                testcase.addCleanup(factory.close_all)
                served = served_factory(self.components, name, factory, implicit)
                port = reactor.listenTCP(0, served, interface="127.0.0.1")
                testcase.addCleanup(port.stopListening)
                self.ports[name] = port.getHost().port
            return self.factories["imap"], {"imap": self.factories["imap"]}

        self.cluster = make_cluster(self.limits, serving) if make_cluster is not None else None
        if self.cluster is None:
            serving(None)
        else:
            self.store.closed = self.cluster.released

    def account(self, plan="starter", owner="owner@example.net", domain="example.com", mailboxes=("alice",)):
        record = self.admin.account_add(owner, plan, verified=True)
        self.admin.domain_add(domain, record.id)
        for local in mailboxes:
            self.admin.mailbox_add("%s@%s" % (local, domain), PASSWORD)
        return record

    def connect(self, login="alice@example.com", password=PASSWORD, port="imaps"):
        """An imaplib client (logged in given C{login}); call in a thread."""
        if port == "imaps":
            client = imaplib.IMAP4_SSL("127.0.0.1", self.ports[port], ssl_context=client_context(), timeout=30)
        else:
            client = imaplib.IMAP4("127.0.0.1", self.ports[port], timeout=30)
        if login is not None:
            client.login(login, password)
        return client

    def connect_from(self, source, login="alice@example.com", password=PASSWORD, port="imaps"):
        """An imaplib client bound to C{source} (any 127.0.0.x), implicit TLS unless C{port} is "imap"."""
        class Bound(imaplib.IMAP4_SSL):
            def _create_socket(self, timeout):
                sock = socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))
                return self.ssl_context.wrap_socket(sock, server_hostname=self.host)

        class BoundPlain(imaplib.IMAP4):
            def _create_socket(self, timeout):
                return socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))

        if port == "imaps":
            client = Bound("127.0.0.1", self.ports[port], ssl_context=client_context(), timeout=30)
        else:
            client = BoundPlain("127.0.0.1", self.ports[port], timeout=30)
        if login is not None:
            client.login(login, password)
        return client

    def deliver(self, address, data, name=None):
        """Drops a message into the mailbox's C{new/} the way delivery does (tmp, fsync, rename)."""
        root = maildir_path(self.config.data_dir, address)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        name = name or "%d.delivery%s.test" % (support.NOON, os.urandom(4).hex())
        with open(os.path.join(root, "tmp", name), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(os.path.join(root, "tmp", name), os.path.join(root, "new", name))

    def in_thread(self, function, *args, **kwargs):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), function, *args, **kwargs)


def message(subject="hello", body="Hi there.\r\n", sender="bob@remote.test", to="alice@example.com"):
    return ("From: Bob <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: Sat, 21 Nov 2026 12:00:00 +0000\r\n"
            "Message-ID: <%s@remote.test>\r\n\r\n%s" % (sender, to, subject, os.urandom(6).hex(), body)).encode()
