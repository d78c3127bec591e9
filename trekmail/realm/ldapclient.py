"""
Talks to the directory servers through ldap3, off the reactor thread.

ldap3's synchronous connections block, so every operation runs on the
client's own thread pool (never the reactor's, which hashes passwords:
a hung directory must not starve logins that do not need it).  Each
worker borrows a bound connection from a small pool; a connection that
fails is dropped and the operation is tried once more on a fresh one,
which is how a restarted slapd is reconnected to without anyone
noticing.  Connect and receive timeouts bound every wait, so a directory
that accepts connections but never answers yields
L{DirectoryUnavailable} after C{[realm] ldap_timeout} seconds instead of
a login that hangs.

L{LdapClient.find} and L{LdapClient.find_all} block: the server reaches
them only through L{LdapClient.search}, the CLI calls them directly.

Mailbox binds (C{[realm] ldap_auth = bind}) use a connection of their
own that is closed afterwards, since a bind changes who the connection
speaks for.
"""

import ssl
import threading

import ldap3
from ldap3.core.exceptions import (
    LDAPCommunicationError,
    LDAPException,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
)
from twisted.logger import Logger

from trekmail.realm.errors import DirectoryUnavailable
from trekmail.realm.ldapsettings import fill
from trekmail.workerthreads import WorkerThreads

_BROKEN = (LDAPCommunicationError, LDAPResponseTimeoutError, LDAPStartTLSError, OSError)
"""What a dead, restarted or hung server raises; anything else is a bug of ours."""

_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_NO_SUCH_OBJECT = 32
_REFUSED_CREDENTIALS = frozenset(
    {
        19,  # constraintViolation: password policy (expired, locked)
        48,  # inappropriateAuthentication
        49,  # invalidCredentials
        50,  # insufficientAccessRights
        53,  # unwillingToPerform: account disabled
    }
)
"""Bind results that mean "not these credentials"; every other failure is the server's."""


class Entry:
    """One search result: its DN and raw attribute values (lists of bytes)."""

    def __init__(self, dn, attributes):
        self.dn = dn
        self.attributes = attributes

    def values(self, name):
        """Values of attribute C{name} (matched without regard to case) as text."""
        for key, values in self.attributes.items():
            if key.lower() == name.lower():
                return [v.decode("utf-8", "replace") for v in values]
        return []

    def first(self, name):
        values = self.values(name)
        return values[0] if values else None


class LdapClient:
    """
    @param settings: an L{trekmail.realm.ldapsettings.LdapSettings}.
    @param reactor: delivers results back to the reactor thread.
    """

    log = Logger()

    def __init__(self, settings, reactor):
        self._settings = settings
        self._reactor = reactor
        self._tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file or None)
        self._idle = []
        self._lock = threading.Lock()
        self._pool = WorkerThreads(reactor, settings.pool_size, "trekmail-ldap")

    def start(self):
        self._pool.start()

    def stop(self):
        self._pool.stop()
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)

    def run(self, function, *args):
        """C{function(*args)} on the directory's worker threads: a Deferred of its result."""
        return self._pool.run(function, *args)

    def search(self, base, template, value, attributes):
        """
        Entries under C{base} matching C{template} with C{value} escaped
        into it: a Deferred firing with a list of at most two L{Entry}
        (two means ambiguous); fails with L{DirectoryUnavailable}.
        """
        return self.run(self.find, base, fill(template, value), list(attributes))

    def bind(self, dn, password):
        """Deferred firing with whether C{dn} binds with C{password}."""
        return self.run(self._bind, dn, password)

    def _connect(self, user, password):
        """
        C{(connection, None)} bound as C{user} on the first server that
        answers, or C{(None, result)} when that server refused the bind;
        L{DirectoryUnavailable} when none answers.
        """
        problems = []
        for url in self._settings.urls:
            # A new Server each time: ldap3's shared one would shun an
            # address for seconds after a failure, delaying reconnection.
            server = ldap3.Server(
                url, get_info=ldap3.NONE, connect_timeout=self._settings.timeout, tls=self._tls
            )
            connection = ldap3.Connection(
                server,
                user=user,
                password=password,
                receive_timeout=self._settings.timeout,
                read_only=True,
                auto_referrals=False,
                raise_exceptions=False,
            )
            try:
                connection.open()
                bound = connection.bind()
            except _BROKEN as e:
                _close(connection)
                problems.append("%s: %s" % (server.name, e))
                continue
            if bound:
                return connection, None
            result = connection.result
            _close(connection)
            return None, result
        raise DirectoryUnavailable("no directory server answered: %s" % ("; ".join(problems),))

    def _borrow(self):
        with self._lock:
            if self._idle:
                return self._idle.pop(), False
        user = self._settings.bind_dn or None
        connection, refusal = self._connect(user, self._settings.bind_password or None)
        if connection is None:
            raise DirectoryUnavailable(
                "the directory refused the service bind as %r: %s" % (user, refusal.get("description"))
            )
        return connection, True

    def _give_back(self, connection):
        with self._lock:
            self._idle.append(connection)

    def _attempt(self, operation):
        """
        C{operation(connection)} on a pooled connection, then its result
        and response; a pooled connection found dead is replaced and the
        operation tried again, a fresh one that fails means the directory
        is unavailable.
        """
        while True:
            connection, fresh = self._borrow()
            try:
                operation(connection)
            except _BROKEN as e:
                _close(connection)
                if fresh:
                    raise DirectoryUnavailable("directory search failed: %s" % (e,)) from None
                continue
            result, response = connection.result, connection.response or []
            self._give_back(connection)
            return result, response

    def _search(self, connection, base, search_filter, attributes, **limits):
        return connection.search(base, search_filter, search_scope=ldap3.SUBTREE, attributes=attributes,
                                 time_limit=self._settings.timeout, **limits)

    def find(self, base, search_filter, attributes):
        """Blocking: at most two matching L{Entry} (two means ambiguous)."""
        result, response = self._attempt(
            lambda connection: self._search(connection, base, search_filter, attributes, size_limit=2))
        return self._entries(base, result, response, truncated_ok=True)

    def find_all(self, base, search_filter, attributes, page_size=500):
        """Blocking: every matching L{Entry}, fetched in pages (RFC 2696)."""
        entries = []
        cookie = None
        while True:
            result, response = self._attempt(
                lambda connection: self._search(connection, base, search_filter, attributes,
                                                paged_size=page_size, paged_cookie=cookie))
            entries += self._entries(base, result, response, truncated_ok=False)
            control = (result.get("controls") or {}).get(_PAGED_RESULTS, {})
            cookie = control.get("value", {}).get("cookie")
            if not cookie:
                return entries

    def _entries(self, base, result, response, truncated_ok):
        code = result.get("result")
        if code == _NO_SUCH_OBJECT:
            self.log.error("LDAP search base {base} does not exist", base=base)
            return []
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED) or (code != _SUCCESS and not truncated_ok):
            raise DirectoryUnavailable("directory search failed: %s" % (result.get("description"),))
        return [
            Entry(item["dn"], item.get("raw_attributes", {}))
            for item in response
            if item.get("type") == "searchResEntry"
        ]

    def _bind(self, dn, password):
        try:
            connection, refusal = self._connect(dn, password)
        except LDAPException as e:
            raise DirectoryUnavailable("directory bind failed: %s" % (e,)) from None
        if connection is not None:
            _close(connection)
            return True
        if refusal.get("result") in _REFUSED_CREDENTIALS:
            return False
        raise DirectoryUnavailable("directory bind failed: %s" % (refusal.get("description"),))


def _close(connection):
    try:
        connection.unbind()
    except (LDAPException, OSError):
        pass
