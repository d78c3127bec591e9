"""
The realm as the servers see it: who the mailboxes, domains and accounts
are.  Backends (the sqlite store here, LDAP elsewhere) implement
L{IDirectory}; everything above the realm asks only through it.
"""

import sqlite3

from zope.interface import Interface, implementer

from trekmail.realm import store
from trekmail.realm.errors import DirectoryUnavailable


class IDirectory(Interface):
    def mailbox(address):
        """
        @return: Deferred firing with a L{MailboxContext} or C{None}; fails
            with L{DirectoryUnavailable} when the backend cannot answer.
        """

    def domain(name):
        """
        @return: Deferred firing with C{(Domain, Account)} for a hosted
            domain or C{None}; fails with L{DirectoryUnavailable}.
        """

    def alias(address):
        """
        @return: Deferred firing with the tuple of mailbox addresses alias
            C{address} delivers to, or C{None} when it is no alias; fails
            with L{DirectoryUnavailable}.
        """

    def set_password_hash(address, password_hash, only_if_current):
        """Store a rehashed password unless it changed meanwhile."""


def _unavailable(failure):
    failure.trap(sqlite3.OperationalError)
    raise DirectoryUnavailable(str(failure.value))


@implementer(IDirectory)
class SqliteDirectory:
    """
    Asks the database on every lookup: an indexed read costs tens of
    microseconds, and no cache means CLI changes apply at once.
    """

    def __init__(self, database):
        self._database = database

    def mailbox(self, address):
        return self._database.run(store.mailbox_context, address).addErrback(_unavailable)

    def domain(self, name):
        return self._database.run(store.domain_context, name).addErrback(_unavailable)

    def alias(self, address):
        return self._database.run(store.alias_mailboxes, address).addErrback(_unavailable)

    def set_password_hash(self, address, password_hash, only_if_current):
        return self._database.run(
            store.mailbox_set_password_hash, address, password_hash, only_if_current
        ).addErrback(_unavailable)
