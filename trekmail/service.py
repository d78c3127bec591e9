"""
The one place that wires components together: from a L{Config} to the
L{MultiService} that C{twistd} runs.  Everything else receives its
reactor, clock, database and endpoints from here.
"""

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.protocols.tls import TLSMemoryBIOFactory

from trekmail.config import ConfigError
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


class Components:
    """What the servers share, built once per process."""

    def __init__(self, config, reactor):
        self.config = config
        self.reactor = reactor
        self.tls_options = tls.server_options(config)
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        self.database = database.ThreadedDatabase(db, reactor)
        self.directory = SqliteDirectory(self.database)
        self.checker = MailboxPasswordChecker(
            self.directory, reactor, scrypt_n=config.get("realm", "password_scrypt_n")
        )


def listener(components, name, factory, implicit_tls=False):
    """
    A service listening on the endpoint configured as C{[listen] name}, or
    C{None} when that key is empty.  Implicit-TLS listeners given a plain
    C{tcp:} description are wrapped in our certificate; an C{ssl:}
    description brings its own.
    """
    description = components.config.get("listen", name)
    if not description:
        return None
    try:
        endpoint = endpoints.serverFromString(components.reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError("listen", name, "cannot parse endpoint %r: %s" % (description, e)) from None
    if implicit_tls and not description.startswith("ssl:"):
        factory = TLSMemoryBIOFactory(components.tls_options, False, factory)
    return StreamServerEndpointService(endpoint, factory)


def make_service(config, reactor):
    components = Components(config, reactor)
    top = service.MultiService()
    DatabaseService(components.database).setServiceParent(top)
    return top
