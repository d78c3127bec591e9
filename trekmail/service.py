"""
The one place that wires components together: from a L{Config} to the
L{MultiService} that C{twistd} runs.  Everything else receives its
reactor, clock, database and endpoints from here.
"""

import sys

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.cred.portal import Portal
from twisted.internet import endpoints, inotify
from twisted.internet.error import CannotListenError
from twisted.protocols.tls import TLSMemoryBIOFactory

from twisted.logger import Logger

from trekmail.config import LISTENERS, ConfigError
from trekmail.imap.limits import ConnectionLimits
from trekmail.imap.server import IMAPFactory, MailUserRealm
from trekmail.imap.store import MailStore
from trekmail.queue.service import QueueService
from trekmail.policy.throttle import AuthThrottle
from trekmail.realm import database, ldapdirectory, schema
from trekmail.realm.checkers import MailboxPasswordChecker
from trekmail.realm.directory import SqliteDirectory
from trekmail.smtp.mx import MXFactory
from trekmail.smtp.submission import SubmissionFactory, SubmissionRealm
from trekmail.admin import api, operations
from trekmail.crypto import SecretKeyring
from trekmail.dav.site import dav_site
from trekmail.relay.mx import make_resolver
from trekmail.relay.smarthost import ProfileTransports, Smarthost
from trekmail import tls


class WorkersService(service.Service):
    """Starts and stops a worker thread pool (sqlite's, LDAP's, Radicale's) with the server."""

    def __init__(self, threaded):
        self.threaded = threaded

    def startService(self):
        super().startService()
        self.threaded.start()

    def stopService(self):
        super().stopService()
        self.threaded.stop()


class StartedLog(service.Service):
    """
    Added last, so its start means every listener before it is bound: the
    line operators and tests wait for.
    """

    log = Logger()

    def __init__(self, listeners):
        self.listeners = listeners

    def startService(self):
        super().startService()
        self.log.info("trekmail started; listening: {listeners}", listeners=self.listeners)


class Components:
    """What the servers share, built once per process."""

    def __init__(self, config, reactor):
        self.config = config
        self.reactor = reactor
        self.endpoints = _parse_endpoints(config, reactor)
        self.tls_options = tls.server_options(config)
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        self.database = database.ThreadedDatabase(db, reactor)
        self.directory, self.checker = build_realm(config, reactor, self.database)
        self.resolver = make_resolver(config, reactor)


def build_realm(config, reactor, database):
    """The directory and login checker for C{[realm] backend}."""
    if config.get("realm", "backend") == "ldap":
        return ldapdirectory.build(config, reactor, database)
    directory = SqliteDirectory(database)
    checker = MailboxPasswordChecker(
        directory, reactor, scrypt_n=config.get("realm", "password_scrypt_n")
    )
    return directory, checker


def _parse_endpoints(config, reactor):
    """
    Parse every configured listener up front, wired or not, so a typo in
    any of them stops start-up before anything binds.
    """
    parsed = {}
    for name in LISTENERS:
        description = config.get("listen", name)
        if not description:
            continue
        try:
            parsed[name] = endpoints.serverFromString(reactor, description)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError("listen", name, "cannot parse endpoint %r: %s" % (description, e)) from None
    return parsed


def listener(components, name, factory, implicit_tls=False):
    """
    A service listening on the endpoint configured as C{[listen] name}, or
    C{None} when that key is empty.  Implicit-TLS listeners given a plain
    C{tcp:} description are wrapped in our certificate; an C{ssl:}
    description brings its own.
    """
    endpoint = components.endpoints.get(name)
    if endpoint is None:
        return None
    if implicit_tls and not components.config.get("listen", name).startswith("ssl:"):
        factory = TLSMemoryBIOFactory(components.tls_options, False, factory)
    return ListenerService(name, components.config.get("listen", name), endpoint, factory)


class ListenerService(StreamServerEndpointService):
    """
    A listener that cannot bind (port in use, no permission) stops
    start-up with one line naming its key, instead of a traceback and a
    server running without that door.
    """

    _raiseSynchronously = True

    def __init__(self, name, description, endpoint, factory):
        super().__init__(endpoint, factory)
        self.name = name
        self.description = description

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            sys.stderr.write(
                "trekmail: configuration error: [listen] %s: cannot listen on %r: %s\n"
                % (self.name, self.description, e.socketError)
            )
            raise SystemExit(78)


def submission_services(components, queue):
    """
    The C{submissions} (implicit TLS) and C{submission} (STARTTLS)
    listeners that are configured, handing messages to C{queue} (an
    L{IMessageQueue}); both share one failed-login throttle.
    """
    portal = Portal(SubmissionRealm(components.directory), [components.checker])
    throttle = AuthThrottle()

    def factory(implicit_tls):
        return SubmissionFactory(
            portal, components.directory, components.database, queue, components.reactor,
            components.config.get("server", "hostname"), components.tls_options, throttle, implicit_tls,
        )

    services = (
        listener(components, "submissions", factory(True), implicit_tls=True),
        listener(components, "submission", factory(False)),
    )
    return [s for s in services if s is not None]


def mx_service(components, queue):
    """The C{[listen] mx} listener handing inbound mail to C{queue}, or C{None}."""
    factory = MXFactory(
        components.directory, queue, components.reactor,
        components.config.get("server", "hostname"), components.tls_options,
    )
    return listener(components, "mx", factory)


def queue_service(components):
    """
    The durable queue with its scheduler and relay; its C{queue} is the
    L{IMessageQueue} the submission and MX listeners hand messages to, and
    its C{router.profiles} takes the provider-profile transport.
    """
    return QueueService(
        components.config, components.reactor, components.database, components.directory,
        resolver=components.resolver,
    )


class MailStoreService(service.Service):
    """Starts and stops the IMAP mail store's worker threads (and its inotify watch) with the server."""

    def __init__(self, store, notifier):
        self.store = store
        self.notifier = notifier

    def startService(self):
        super().startService()
        self.store.start()
        if self.notifier is not None:
            self.notifier.startReading()

    def stopService(self):
        super().stopService()
        self.store.stop()
        if self.notifier is not None:
            self.notifier.loseConnection()


def imap_services(components):
    """
    The C{imaps} (implicit TLS) and C{imap} (STARTTLS) listeners that are
    configured, and the mail store they share (first in the list, so it
    starts before them).
    """
    config = components.config
    try:
        notifier = inotify.INotify(components.reactor)
    except inotify.INotifyError:
        notifier = None
    store = MailStore(config.data_dir, components.reactor, notifier, config.get("imap", "message_cache"))
    portal = Portal(MailUserRealm(), [components.checker])
    limits = ConnectionLimits(config.get("imap", "max_unauthenticated_per_ip"), config.get("imap", "max_connections"))

    def factory(implicit_tls):
        return IMAPFactory(
            portal, components.directory, store, limits, components.reactor,
            config.get("server", "hostname"), components.tls_options, implicit_tls,
            config.get("imap", "append_limit"), config.get("imap", "trusted_networks"),
        )

    services = (
        listener(components, "imaps", factory(True), implicit_tls=True),
        listener(components, "imap", factory(False)),
    )
    return [MailStoreService(store, notifier)] + [s for s in services if s is not None]


def sending_services(components):
    """
    Plugs relay through customers' SMTP profiles into the queue's router,
    and returns the admin HTTP API listener (or C{None}) sharing the same
    smarthost client, resolver and key file.
    """
    config, reactor = components.config, components.reactor
    keyring = SecretKeyring.load(config.secret_key_path)
    smarthost = Smarthost(reactor, config.get("server", "hostname"),
                          trust_root=operations.smarthost_trust(config),
                          timeout=config.get("smarthost", "timeout"))
    components.queue_service.router.profiles = ProfileTransports(config, components.database, smarthost, keyring)
    ops = operations.Operations(config, components.database, reactor,
                                resolver=components.resolver,
                                smarthost=smarthost, keyring=keyring)
    return listener(components, "admin", api.site(ops, api.load_token(config)))


def dav_services(components):
    """
    The C{[listen] https} listener serving CalDAV/CardDAV (always behind
    TLS) and the worker threads its WSGI application runs on, or nothing.
    """
    if components.endpoints.get("https") is None:
        return []
    site, pool = dav_site(components.config, components.checker, components.reactor)
    return [WorkersService(pool), listener(components, "https", site, implicit_tls=True)]


def make_service(config, reactor):
    components = Components(config, reactor)
    top = service.MultiService()
    WorkersService(components.database).setServiceParent(top)
    components.queue_service = queue_service(components)
    components.queue_service.setServiceParent(top)
    queue = components.queue_service.queue
    for door in submission_services(components, queue) + [mx_service(components, queue)]:
        if door is not None:
            door.setServiceParent(top)
    if isinstance(components.directory, ldapdirectory.LdapDirectory):
        WorkersService(components.directory).setServiceParent(top)
    for imap in imap_services(components):
        imap.setServiceParent(top)
    for dav in dav_services(components):
        dav.setServiceParent(top)
    admin = sending_services(components)
    if admin is not None:
        admin.setServiceParent(top)
    StartedLog(
        ", ".join("%s=%s" % (name, config.get("listen", name)) for name in LISTENERS if config.get("listen", name))
    ).setServiceParent(top)
    return top
