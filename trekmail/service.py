"""
The one place that wires components together: from a L{Config} to the
L{MultiService} that C{twistd} runs.  Everything else receives its
reactor, clock, database and endpoints from here.
"""

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.protocols.tls import TLSMemoryBIOFactory

from twisted.logger import Logger

from trekmail.config import LISTENERS, ConfigError
from trekmail.realm import database, schema
from trekmail.realm.checkers import MailboxPasswordChecker
from trekmail.realm.directory import SqliteDirectory
from trekmail import tls


class DatabaseService(service.Service):
    """Starts and stops the sqlite worker thread with the server."""

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
        self.directory = SqliteDirectory(self.database)
        self.checker = MailboxPasswordChecker(
            self.directory, reactor, scrypt_n=config.get("realm", "password_scrypt_n")
        )


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
    return StreamServerEndpointService(endpoint, factory)


def make_service(config, reactor):
    components = Components(config, reactor)
    top = service.MultiService()
    DatabaseService(components.database).setServiceParent(top)
    StartedLog(
        ", ".join("%s=%s" % (name, config.get("listen", name)) for name in LISTENERS if config.get("listen", name))
    ).setServiceParent(top)
    return top
