"""
The one place that wires components together: from a L{Config} to the
L{MultiService} that C{twistd} runs.  Everything else receives its
reactor, clock, database and endpoints from here.
"""

import functools
import os
import signal
import sys

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.cred.portal import Portal
from twisted.internet import endpoints, inotify, ssl
from twisted.internet.error import CannotListenError
from twisted.protocols.tls import TLSMemoryBIOFactory

from twisted.logger import Logger

from trekmail.config import LISTENERS, ConfigError
from trekmail.connlimit import HTTP_REFUSAL, SMTP_REFUSAL, CappedFactory, ConnectionCaps
from trekmail.imap.cluster import Coordinator, Member, Placing, Solo
from trekmail.imap.limits import ConnectionLimits, connection_ceiling
from trekmail.imap.server import IMAPFactory, MailUserRealm
from trekmail.imap.sessions import MailboxRecheck, Sessions
from trekmail.imap.store import MailStore
from trekmail.imapprocesses import IMAPProcesses
from trekmail.queue.returnpath import KEY_INFO, ReturnPaths
from trekmail.queue.retry import RetryPolicy
from trekmail.queue.service import QueueService, QueueSettings
from trekmail.policy.tally import Tally
from trekmail.policy.logins import LoginGuard
from trekmail.realm import database, ldapdirectory, retention, schema
from trekmail.realm.checkers import MailboxPasswordChecker
from trekmail.realm.directory import SqliteDirectory
from trekmail.smtp.data import DataIntake
from trekmail.workerthreads import WorkerThreads
from trekmail.inbound.verdicts import Authenticator
from trekmail.smtp.mx import MXFactory
from trekmail.smtp.submission import SubmissionFactory, SubmissionRealm
from trekmail.admin import api, operations
from trekmail.crypto import SecretKeyring
from trekmail.dav.site import dav_site
from trekmail.mailstore import dav_collections
from trekmail.metrics.endpoint import MetricsService
from trekmail.relay.dkim import Signer
from trekmail.relay.dkimrotation import RotationService
from trekmail.relay.managed import ManagedRelay, SourcePools
from trekmail.relay.mx import make_resolver
from trekmail.relay.smarthost import ProfileTransports, Smarthost
from trekmail.reload import OnSignal, Reload
from trekmail.web import autoconfig
from trekmail import acmeclient, acmerenewal, settings


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


INBOUND_CHECK_THREADS = 4
"""Messages checked at once; each waits mostly on DNS."""


class Components:
    """
    What the servers share, built once per process.

    @param clock: the policy's time (sending caps, warmup, failed logins):
        the reactor in a server, a C{task.Clock} in a test's site.
    @param logins: the L{LoginGuard}; by default one by C{[auth]}.
    """

    def __init__(self, config, reactor, *, clock=None, logins=None):
        self.config = config
        self.reactor = reactor
        self.clock = reactor if clock is None else clock
        self.endpoints = _parse_endpoints(config, reactor)
        self.tls_options = settings.tls_options(config)
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        self.database = database.ThreadedDatabase(db, reactor)
        self.realm = settings.realm(config)
        self.hashing = WorkerThreads(reactor, config.get("auth", "hash_threads"), "trekmail-password-hash")
        """The threads every password hash runs on: logins on every protocol, and the doctor's check."""
        self.directory, self.checker = build_realm(config, self.realm, reactor, self.database, self.hashing)
        self.logins = logins if logins is not None else LoginGuard(
            self.clock, in_progress=config.get("auth", "max_logins_in_progress_per_ip"),
            total=config.get("auth", "max_logins_in_progress"))
        """The one failed-login throttle of SMTP, IMAP and DAV (another IMAP process asks the first's)."""
        self.resolver = make_resolver(config.get("dns", "nameservers"), reactor)
        self.keyring = SecretKeyring.load(config.secret_key_path)
        """The one copy of the secrets key: SMTP profiles' passwords and the return paths' MAC key."""
        self.smarthost = Smarthost(reactor, config.get("server", "hostname"),
                                   trust_root=settings.smarthost_trust(config),
                                   timeout=config.get("smarthost", "timeout"))
        incoming = config.data_path("incoming")
        os.makedirs(incoming, mode=0o700, exist_ok=True)
        self.data_intake = DataIntake(directory=incoming)
        self.inbound_checks = WorkerThreads(reactor, INBOUND_CHECK_THREADS, "trekmail-inbound-checks")
        """The threads the MX's SPF, DKIM, ARC and DMARC checks run on (their DNS lookups block)."""


def build_realm(config, realm, reactor, database, hashing):
    """The directory and login checker for C{[realm] backend} (L{RealmSettings} C{realm}), hashing on C{hashing}."""
    if realm.ldap is not None:
        return ldapdirectory.build(realm, reactor=reactor, database=database,
                                   refresh_seconds=config.get("realm", "refresh_seconds"), hashing=hashing)
    directory = SqliteDirectory(database)
    checker = MailboxPasswordChecker(directory, reactor, scrypt_n=realm.scrypt_n, hashing=hashing)
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


PROTOCOLS = {"submissions": "smtp", "submission": "smtp", "mx": "smtp", "https": "http", "admin": "http",
             "metrics": "http"}
"""What each capped listener speaks, as its refusals are logged."""


def listener(components, name, factory, implicit_tls=False, caps=None, refusal=b""):
    """
    A service listening on the endpoint configured as C{[listen] name}, or
    C{None} when that key is empty.  With C{caps}, a connection past them
    is told C{refusal} (nothing on implicit TLS: the client expects a
    handshake) and closed before TLS or the protocol are set up for it.
    """
    endpoint = components.endpoints.get(name)
    if endpoint is None:
        return None
    served = served_factory(components, name, factory, implicit_tls)
    if caps is not None:
        served = CappedFactory(served, caps, b"" if implicit_tls else refusal, clock=components.clock, listener=name,
                               protocol=PROTOCOLS.get(name))
    return ListenerService(name, components.config.get("listen", name), endpoint, served)


def connection_caps(config, section):
    """The C{[section] max_connections} and C{max_connections_per_ip} of a door, the total kept within descriptors."""
    return ConnectionCaps(connection_ceiling(config.get(section, "max_connections")),
                          config.get(section, "max_connections_per_ip"))


def served_factory(components, name, factory, implicit_tls):
    """
    Implicit-TLS listeners given a plain C{tcp:} description are wrapped
    in our certificate; an C{ssl:} description brings its own.
    """
    if implicit_tls and not components.config.get("listen", name).startswith("ssl:"):
        return TLSMemoryBIOFactory(components.tls_options, False, factory)
    return factory


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


SUBMISSION_LISTENERS = (("submissions", True), ("submission", False))
"""The submission listener names, and whether each is implicit TLS."""


def submission_factories(components, queue, factory_class=SubmissionFactory):
    """
    C{{name: factory}} for the C{submissions} (implicit TLS) and
    C{submission} (STARTTLS) listeners, handing messages to C{queue} (an
    L{IMessageQueue}) and sharing one tally of sending counts.
    """
    portal = Portal(SubmissionRealm(components.directory), [components.checker])
    tally = Tally(components.database, components.clock)
    return {
        name: factory_class(
            portal=portal,
            directory=components.directory,
            tally=tally,
            queue=queue,
            clock=components.clock,
            hostname=components.config.get("server", "hostname"),
            tls_options=components.tls_options,
            logins=components.logins,
            implicit_tls=implicit_tls,
            intake=components.data_intake,
        )
        for name, implicit_tls in SUBMISSION_LISTENERS
    }


def submission_services(components, queue):
    """The configured submission listeners (L{submission_factories}), capped by C{[submission]}."""
    caps = connection_caps(components.config, "submission")
    factories = submission_factories(components, queue)
    services = (
        listener(components, "submissions", factories["submissions"], implicit_tls=True, caps=caps),
        listener(components, "submission", factories["submission"], caps=caps, refusal=SMTP_REFUSAL),
    )
    return [s for s in services if s is not None]


def mx_service(components, queue, return_paths=None):
    """
    The C{[listen] mx} listener handing inbound mail to C{queue}, or
    C{None}; it also takes reports to the queue's C{return_paths}.
    """
    factory = MXFactory(
        directory=components.directory,
        queue=queue,
        clock=components.reactor,
        hostname=components.config.get("server", "hostname"),
        tls_options=components.tls_options,
        postmaster=components.config.get("mx", "postmaster"),
        recipient_delimiter=components.config.get("mx", "recipient_delimiter"),
        return_paths=return_paths,
        intake=components.data_intake,
        authenticator=Authenticator(settings.inbound(components.config), components.inbound_checks),
    )
    return listener(components, "mx", factory, caps=connection_caps(components.config, "mx"), refusal=SMTP_REFUSAL)


def queue_service(components):
    """
    The durable queue with its scheduler, its managed relay and the
    provider-profile transports; its C{queue} is the L{IMessageQueue} the
    submission and MX listeners hand messages to.
    """
    return build_queue(components.config, components.reactor, components.database, components.directory,
                       resolver=components.resolver, keyring=components.keyring, smarthost=components.smarthost)


def build_queue(config, reactor, database, directory, *, resolver=None, tls_context=None, keyring=None,
                smarthost=None):
    """
    A L{QueueService} with the managed relay and DKIM signer it delivers
    through, and with C{smarthost} the routes through customers' SMTP
    profiles: built here so that the queue knows the relays only through
    L{trekmail.delivery}.
    """
    hostname = config.get("server", "hostname")
    keyring = keyring if keyring is not None else SecretKeyring.load(config.secret_key_path)
    return_paths = ReturnPaths(lambda: keyring.derive(KEY_INFO), hostname, reactor)
    relay = ManagedRelay(
        reactor=reactor,
        resolver=resolver if resolver is not None else make_resolver(config.get("dns", "nameservers"), reactor),
        hostname=hostname,
        port=config.get("relay", "mx_port"),
        pools=SourcePools(config.get("relay", "source_pools"), reactor),
        tls_context=tls_context if tls_context is not None else ssl.CertificateOptions(),
        connections_per_destination=config.get("queue", "connections_per_destination"),
        return_paths=return_paths,
    )
    queue_settings = QueueSettings(
        hostname=hostname, queue_dir=config.data_path("queue"), maildir_root=config.data_dir,
        suppress_after=config.get("queue", "suppress_after"),
        retry=RetryPolicy(intervals=tuple(config.get("queue", "retry_intervals")), max_age=config.get("queue", "max_age")),
        concurrency=config.get("queue", "concurrency"),
        realm_database=None if config.get("realm", "backend") == "ldap" else config.database_path,
    )
    return QueueService(queue_settings, reactor=reactor, database=database, directory=directory, relay=relay,
                        signer=Signer(config.data_dir, reactor.seconds), return_paths=return_paths,
                        profiles=None if smarthost is None else ProfileTransports(database, smarthost, keyring))


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


IMAP_LISTENERS = (("imaps", True), ("imap", False))
"""The IMAP listener names, and whether each is implicit TLS."""


def imap_factories(components, *, portal, store, limits, cluster, sessions, factory_class=IMAPFactory):
    """C{{name: factory}} for the C{imaps} and C{imap} listeners of one IMAP process, as C{[imap]} says."""
    config = components.config
    return {
        name: factory_class(
            portal=portal,
            directory=components.directory,
            store=store,
            limits=limits,
            clock=components.clock,
            hostname=config.get("server", "hostname"),
            tls_options=components.tls_options,
            implicit_tls=implicit_tls,
            appendlimit=config.get("imap", "append_limit"),
            trusted_networks=config.get("imap", "trusted_networks"),
            cluster=cluster,
            sessions=sessions,
        )
        for name, implicit_tls in IMAP_LISTENERS
    }


def _imap_parts(components, make_cluster):
    """
    What one IMAP process serves with: its mail store's service, its
    L{trekmail.imap.cluster} role (from C{make_cluster(limits, serving)},
    which builds with C{serving} the factories that need the role), and the
    factory for each configured listener name (an L{IMAPFactory}, in TLS
    for C{imaps}).
    """
    config = components.config
    try:
        notifier = inotify.INotify(components.reactor)
    except inotify.INotifyError:
        notifier = None
    portal = Portal(MailUserRealm(), [components.checker])
    limits = ConnectionLimits(config.get("imap", "max_unauthenticated_per_ip"),
                              connection_ceiling(config.get("imap", "max_connections")))
    store = MailStore(config.data_dir, components.reactor, notifier, cache_bytes=config.get("imap", "message_cache"),
                      closed=lambda address: cluster.released(address))
    sessions = Sessions()

    def serving(cluster):
        factories = imap_factories(components, portal=portal, store=store, limits=limits, cluster=cluster,
                                   sessions=sessions)
        doors = {name: served_factory(components, name, factories[name], implicit_tls)
                 for name, implicit_tls in IMAP_LISTENERS if components.endpoints.get(name) is not None}
        return factories["imap"], doors

    cluster = make_cluster(limits, serving)
    parts = service.MultiService()
    MailStoreService(store, notifier).setServiceParent(parts)
    recheck = MailboxRecheck(sessions, components.directory, components.reactor)
    recheck.setServiceParent(parts)
    return parts, cluster, cluster.doors, recheck


def imap_services(components):
    """
    The C{imaps} (implicit TLS) and C{imap} (STARTTLS) listeners that are
    configured, the mail store they share (first in the list, so it
    starts before them) and, with C{[imap] processes} above 1, the
    service that runs the other processes (last, once the listeners are
    bound); the process's L{trekmail.imap.cluster} role; and what closes
    the sessions of deleted or renamed mailboxes at once, in every process.
    """
    size = components.config.get("imap", "processes")
    reactor = components.reactor
    store_service, cluster, doors, recheck = _imap_parts(
        components,
        lambda limits, serving: Coordinator(limits, reactor=reactor, size=size, guard=components.logins,
                                            serving=serving) if size > 1
        else Solo(limits, reactor=reactor, guard=components.logins, serving=serving))
    listeners = []
    for name, door in doors.items():
        if size > 1:
            door = Placing(cluster, name, door)
        listeners.append(ListenerService(name, components.config.get("listen", name), components.endpoints[name],
                                         door))
    if size == 1 or not listeners:
        return [store_service] + listeners, cluster, recheck.check
    processes = IMAPProcesses(components.config.path, reactor, cluster)

    def mailboxes_gone():
        recheck.check()
        processes.signal_children(signal.SIGUSR2)
    return [store_service] + listeners + [processes], cluster, mailboxes_gone


def imap_process_service(config, reactor, index, orphaned):
    """
    Everything one of the other IMAP processes runs: the realm and its
    mail store.  It listens on nothing: the first process places
    connections with it.
    """
    components = Components(config, reactor)
    top = service.MultiService()
    for realm in realm_services(components):
        realm.setServiceParent(top)
    store_service, cluster, _, recheck = _imap_parts(
        components,
        lambda limits, serving: Member(limits, reactor=reactor, index=index, orphaned=orphaned, serving=serving))
    store_service.setServiceParent(top)
    Reload(reactor, components.tls_options).setServiceParent(top)
    OnSignal(reactor, signal.SIGUSR2, recheck.check).setServiceParent(top)
    return top, cluster


def admin_service(components, mailboxes_gone=None):
    """
    The admin HTTP API listener (or C{None}), sharing the server's
    smarthost client, resolver and key; C{mailboxes_gone} is called after
    a verb that deleted or renamed mailboxes.
    """
    config = components.config
    ops = operations.Operations(
        settings=operations.VerbSettings(realm=components.realm, queue_dir=config.data_path("queue"),
                                         keyring=components.keyring),
        database=components.database, reactor=components.reactor,
        resolver=components.resolver, smarthost=components.smarthost, hashing=components.hashing,
        mailboxes_gone=mailboxes_gone)
    return listener(components, "admin", api.site(ops, settings.admin_token(config)), caps=connection_caps(config, "admin"), refusal=HTTP_REFUSAL)


def dav_services(components):
    """
    The C{[listen] https} listener serving CalDAV/CardDAV and client autoconfiguration (always behind
    TLS) and the worker threads its WSGI application runs on, or nothing;
    and its site (or C{None}).
    """
    if components.endpoints.get("https") is None:
        return [], None
    config = components.config
    site, pool = dav_site(collections=dav_collections(config.data_dir),
                          threads=config.get("dav", "threads"), max_body=config.get("dav", "max_body"),
                          checker=components.checker, reactor=components.reactor, logins=components.logins,
                          mounts=autoconfig.mounts(components.directory, components.realm.published))
    return [WorkersService(pool),
            listener(components, "https", site, implicit_tls=True, caps=connection_caps(components.config, "dav"))], site


def metrics_services(components, *, queue, listeners, imap, dav):
    """
    The C{[listen] metrics} listener and the service feeding its figures,
    or nothing: it reads C{queue}, the capped C{listeners} (C{{name:
    CappedFactory}}), the C{imap} cluster role and the C{dav} site.
    """
    if components.endpoints.get("metrics") is None:
        return []
    metrics = MetricsService(components.reactor, queue=queue, listeners=listeners, imap=imap, dav=dav)
    caps = connection_caps(components.config, "metrics")
    return [metrics, listener(components, "metrics", metrics.site(), caps=caps, refusal=HTTP_REFUSAL)]


def acme_services(components, installed):
    """
    With C{[acme] directory_url}: the C{[listen] http} listener answering
    HTTP-01 challenges and the renewal ordering on its own worker thread
    (the ACME calls block), installing each new pair with C{installed}.
    """
    acme = settings.acme(components.config)
    if acme is None:
        return []
    reactor = components.reactor
    worker = WorkerThreads(reactor, 1, "trekmail-acme")
    challenges = acmerenewal.Challenges()
    renewal = acmerenewal.Renewal(
        clock=reactor, pair=acme.pair, domains=acme.domains, renew_before=acme.renew_before,
        order=functools.partial(acmeclient.obtain, acme), run=worker.run, installed=installed,
        challenges=challenges, reactor=reactor)
    return [WorkersService(worker), listener(components, "http", challenges.site()), renewal]


def realm_services(components):
    """
    The worker threads of the realm's database and password hashes and,
    with that backend, of LDAP; the DKIM key rotation's schedule.
    """
    config = components.config
    services = [WorkersService(components.database), WorkersService(components.hashing), RotationService(
        database=components.database, resolver=components.resolver, clock=components.reactor,
        data_dir=config.data_dir, settings=components.realm.dkim, interval=config.get("dkim", "check_interval"))]
    if isinstance(components.directory, ldapdirectory.LdapDirectory):
        services.append(WorkersService(components.directory))
    return services


def _check_processes(config):
    """
    Other IMAP processes read the same file and are given the bound TCP
    sockets, to be wrapped in the [tls] certificate as here: an C{ssl:}
    (own certificate), C{unix:} or other description cannot be shared so.
    """
    if config.get("imap", "processes") == 1:
        return
    if config.path is None:
        raise ConfigError("imap", "processes", "other processes need the configuration from a file")
    for name, _ in IMAP_LISTENERS:
        description = config.get("listen", name)
        if description and not description.startswith(("tcp:", "tcp6:")):
            raise ConfigError("imap", "processes", "above 1 needs tcp: IMAP listeners, not [listen] %s = %s"
                              % (name, description))


def make_service(config, reactor):
    _check_processes(config)
    components = Components(config, reactor)
    top = service.MultiService()
    for realm in realm_services(components):
        realm.setServiceParent(top)
    queuing = queue_service(components)
    queuing.setServiceParent(top)
    queue = queuing.queue
    WorkersService(components.inbound_checks).setServiceParent(top)
    for door in submission_services(components, queue) + [mx_service(components, queue, queuing.return_paths)]:
        if door is not None:
            door.setServiceParent(top)
    imaps, imap_cluster, mailboxes_gone = imap_services(components)
    for imap in imaps:
        imap.setServiceParent(top)
    reload = Reload(reactor, components.tls_options, [s for s in imaps if isinstance(s, IMAPProcesses)])
    reload.setServiceParent(top)
    for acme in acme_services(components, reload.reload):
        acme.setServiceParent(top)
    davs, dav = dav_services(components)
    for door in davs:
        door.setServiceParent(top)
    purging = WorkerThreads(reactor, 1, "trekmail-purge")
    WorkersService(purging).setServiceParent(top)
    retention.RetentionPurge(config.data_dir, config.get("realm", "deleted_mail_retention_days"), reactor,
                             purging.run).setServiceParent(top)
    admin = admin_service(components, mailboxes_gone)
    if admin is not None:
        admin.setServiceParent(top)
    capped = {s.name: s.factory for s in top if isinstance(s, ListenerService) and isinstance(s.factory, CappedFactory)}
    for metrics in metrics_services(components, queue=queue, listeners=capped, imap=imap_cluster, dav=dav):
        metrics.setServiceParent(top)
    StartedLog(
        ", ".join("%s=%s" % (name, config.get("listen", name)) for name in LISTENERS if config.get("listen", name))
    ).setServiceParent(top)
    return top
