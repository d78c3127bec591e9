"""
The realm read from an LDAP directory (C{[realm] backend = ldap}).

Who exists and what they may do comes from the directory: mailboxes
(password, paused), domains (their account number) and accounts (owner,
plan, payment, verification, suspension).  What only this server knows
stays in the local store (L{trekmail.realm.ldaplocal}): a directory domain
gets its local row, with a fresh DKIM key, the first time it is looked
up, so C{trekmail domain dns DOMAIN} works once the domain has been seen
(after a login, a delivery, or C{trekmail directory sync}).

Answers are cached for at most C{[realm] refresh_seconds}, so a change in
the directory (a password reset, a suspension) is seen within that time.
When the directory is down, answers still in the cache keep serving until
they expire, then every lookup fails with L{DirectoryUnavailable}, a
temporary failure: an outage is never reported as a wrong password or an
unknown user, and nothing older than C{refresh_seconds} is ever trusted.

Rehash-on-login never writes to the directory: the directory's hashes
are its administrators' to choose, so L{LdapDirectory.set_password_hash}
does nothing and the compare checker is built not to ask.
"""

import datetime
import re
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from trekmail.plans import UnknownPlan, plan_named
from trekmail.realm import dkimkeys, ldaplocal
from trekmail.realm.admin import check_domain, check_mailbox_address
from trekmail.realm.checkers import MailboxPasswordChecker, address_and_password
from trekmail.realm.directory import IDirectory
from trekmail.realm.errors import DirectoryUnavailable, InvalidInput
from trekmail.realm.ldapclient import LdapClient
from trekmail.realm.model import SUSPENSION_REASONS, Account, Mailbox, MailboxContext

_GENERALIZED_TIME = re.compile(
    r"^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:[.,]\d+)?(Z|[+-]\d{4})?$"
)


class Malformed(DirectoryUnavailable):
    """A directory entry this server cannot use; the operator must fix it."""


@dataclass(frozen=True)
class MailboxEntry:
    dn: str
    password_hash: str
    paused: bool


def _boolean(entry, attribute, default):
    value = entry.first(attribute)
    if value is None:
        return default
    word = value.strip().upper()
    if word in ("TRUE", "YES", "1"):
        return True
    if word in ("FALSE", "NO", "0"):
        return False
    raise Malformed("%s: %s is %r, expected TRUE or FALSE" % (entry.dn, attribute, value))


def _date(entry, attribute):
    """An LDAP GeneralizedTime (or YYYY-MM-DD) as the UTC date it falls on."""
    value = entry.first(attribute) or entry.first("createTimestamp")
    if value is None:
        raise Malformed("%s: %s is missing" % (entry.dn, attribute))
    try:
        return datetime.date.fromisoformat(value.strip())
    except ValueError:
        pass
    match = _GENERALIZED_TIME.match(value.strip())
    if match is None:
        raise Malformed("%s: %s is %r, not a GeneralizedTime" % (entry.dn, attribute, value))
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        raise Malformed("%s: %s is %r, not a date" % (entry.dn, attribute, value)) from None
    if zone and zone != "Z":
        offset = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        moment -= offset if zone[0] == "+" else -offset
    return moment.date()


def parse_account(entry, account_id, attributes):
    """The directory's facts about one account, as an L{Account}."""
    owner = entry.first(attributes["owner"])
    if not owner:
        raise Malformed("%s: %s (the owner's address) is missing" % (entry.dn, attributes["owner"]))
    try:
        plan = plan_named(entry.first(attributes["plan"]) or "").name
    except UnknownPlan as e:
        raise Malformed("%s: %s: %s" % (entry.dn, attributes["plan"], e)) from None
    suspension = entry.first(attributes["suspension"])
    if suspension is not None:
        suspension = suspension.strip().lower()
        if suspension not in SUSPENSION_REASONS:
            raise Malformed(
                "%s: %s is %r, expected one of %s"
                % (entry.dn, attributes["suspension"], suspension, ", ".join(SUSPENSION_REASONS))
            )
    return Account(
        id=account_id,
        owner_email=owner.strip().lower(),
        owner_verified=_boolean(entry, attributes["owner_verified"], False),
        registered=_date(entry, attributes["registered"]),
        plan=plan,
        paid=_boolean(entry, attributes["paid"], True),
        suspension=suspension,
    )


def parse_account_number(entry, attributes):
    value = entry.first(attributes["account"])
    try:
        number = int((value or "").strip())
    except ValueError:
        number = 0
    if number <= 0:
        raise Malformed(
            "%s: %s is %r, expected a positive account number" % (entry.dn, attributes["account"], value)
        )
    return number


def account_attributes(attributes):
    """The attributes to ask for when reading an account entry."""
    fields = ("owner", "owner_verified", "registered", "plan", "paid", "suspension")
    return [attributes[field] for field in fields] + ["createTimestamp"]


class AnswerCache:
    """
    Directory answers, negative ones included, each kept at most C{ttl}
    seconds of C{clock} time; the least recently stored go first past
    C{size}.  A C{ttl} of 0 caches nothing.
    """

    def __init__(self, clock, ttl, size=10000):
        self._clock = clock
        self._ttl = ttl
        self._size = size
        self._entries = OrderedDict()

    def get(self, key):
        """C{(True, value)} while fresh, else C{(False, None)}."""
        found = self._entries.get(key)
        if found is None:
            return False, None
        expires, value = found
        if self._clock.seconds() >= expires:
            del self._entries[key]
            return False, None
        return True, value

    def put(self, key, value):
        if self._ttl <= 0:
            return
        self._entries[key] = (self._clock.seconds() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _database_unavailable(failure):
    failure.trap(sqlite3.OperationalError, sqlite3.IntegrityError)
    raise DirectoryUnavailable("local store: %s" % (failure.value,))


@implementer(IDirectory)
class LdapDirectory:
    """
    @param client: an L{LdapClient} (searches and binds, on its own threads).
    @param database: the L{trekmail.realm.database.ThreadedDatabase} holding local rows.
    @param reactor: runs DKIM key generation in its thread pool.
    @param clock: an C{IReactorTime} for cache expiry and first-seen dates.
    @param data_dir: where DKIM private keys are written.
    """

    log = Logger()

    def __init__(self, *, settings, client, database, reactor, clock, data_dir, refresh_seconds):
        self.settings = settings
        self._client = client
        self._database = database
        self._reactor = reactor
        self._clock = clock
        self._data_dir = data_dir
        self._cache = AnswerCache(clock, refresh_seconds)
        self._provisioning = defer.DeferredLock()

    def start(self):
        self._client.start()

    def stop(self):
        self._client.stop()

    @defer.inlineCallbacks
    def _lookup(self, kind, key, base, template, attributes, parse):
        """One cached search: C{parse(entry)} of the single match, or C{None}."""
        fresh, value = self._cache.get((kind, key))
        if fresh:
            return value
        try:
            entries = yield self._client.search(base, template, key, attributes)
            if len(entries) > 1:
                raise Malformed("more than one %s entry under %s matches %r" % (kind, base, key))
            value = parse(entries[0]) if entries else None
        except Malformed as e:
            self.log.error("directory entry unusable: {problem}", problem=str(e))
            raise
        except DirectoryUnavailable as e:
            self.log.warn("directory unavailable: {problem}", problem=str(e))
            raise
        self._cache.put((kind, key), value)
        return value

    def _mailbox_entry(self, address):
        attributes = self.settings.attributes
        wanted = [attributes["paused"]]
        if self.settings.auth == "compare":
            wanted.append(attributes["password"])

        def parse(entry):
            password = entry.first(attributes["password"]) or ""
            if self.settings.auth == "compare" and not password:
                self.log.warn(
                    "{dn} has no readable {attribute}: compare logins need read access to it",
                    dn=entry.dn,
                    attribute=attributes["password"],
                )
            return MailboxEntry(entry.dn, password, _boolean(entry, attributes["paused"], False))

        return self._lookup(
            "mailbox", address, self.settings.mailbox_base, self.settings.mailbox_filter, wanted, parse
        )

    def _account_number(self, name):
        attributes = self.settings.attributes
        return self._lookup(
            "domain",
            name,
            self.settings.domain_base,
            self.settings.domain_filter,
            [attributes["account"]],
            lambda entry: parse_account_number(entry, attributes),
        )

    def _account(self, number):
        attributes = self.settings.attributes
        return self._lookup(
            "account",
            number,
            self.settings.account_base,
            self.settings.account_filter,
            account_attributes(attributes),
            lambda entry: parse_account(entry, number, attributes),
        )

    @defer.inlineCallbacks
    def domain(self, name):
        try:
            name = check_domain(name)
        except InvalidInput:
            return None
        number = yield self._account_number(name)
        if number is None:
            return None
        account = yield self._account(number)
        if account is None:
            self.log.error(
                "directory domain {domain} names account {number}, which the directory lacks",
                domain=name,
                number=number,
            )
            return None
        local = yield self._database.run(ldaplocal.local_domain, name, account).addErrback(
            _database_unavailable
        )
        if local is None:
            local = yield self._provisioning.run(self._first_sight, name, account)
        return local

    @defer.inlineCallbacks
    def _first_sight(self, name, account):
        local = yield self._database.run(ldaplocal.local_domain, name, account)
        if local is not None:
            return local
        public_key = yield self._client.run(dkimkeys.generate, self._data_dir, name)
        local = yield self._database.run(
            ldaplocal.add_domain,
            name,
            account,
            self._clock.seconds(),
            dkimkeys.DEFAULT_SELECTOR,
            public_key,
        ).addErrback(_database_unavailable)
        self.log.info(
            "directory domain {domain} (account {account}) seen first: local row and DKIM key made",
            domain=name,
            account=account.id,
        )
        return local

    @defer.inlineCallbacks
    def mailbox(self, address):
        try:
            address = check_mailbox_address(address)
        except InvalidInput:
            return None
        entry = yield self._mailbox_entry(address)
        if entry is None:
            return None
        found = yield self.domain(address.rpartition("@")[2])
        if found is None:
            self.log.warn("directory mailbox {address} has no hosted domain", address=address)
            return None
        domain, account = found
        mailbox = Mailbox(address, domain.name, entry.password_hash, entry.paused)
        return MailboxContext(mailbox, domain, account)

    @defer.inlineCallbacks
    def bind(self, address, password):
        """Whether the directory accepts C{password} for C{address}'s entry."""
        try:
            address = check_mailbox_address(address)
        except InvalidInput:
            return False
        entry = yield self._mailbox_entry(address)
        if entry is None or not password:
            return False
        try:
            accepted = yield self._client.bind(entry.dn, password)
        except DirectoryUnavailable as e:
            self.log.warn("directory unavailable: {problem}", problem=str(e))
            raise
        return accepted

    def alias(self, address):
        """The directory has no alias entries yet: every address is a mailbox or nothing (docs/addressing.md)."""
        return defer.succeed(None)

    def set_password_hash(self, address, password_hash, only_if_current):
        return defer.succeed(None)


@implementer(ICredentialsChecker)
class LdapBindChecker:
    """
    Logs a mailbox in by binding to the directory as its entry, so any
    password scheme the directory understands works and the service
    account never needs to read C{userPassword}.  The mailbox must also
    resolve to a hosted domain and account, as with the compare checker.
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(self, directory):
        self._directory = directory

    @defer.inlineCallbacks
    def requestAvatarId(self, credentials):
        address, password = address_and_password(credentials)
        if address is None or not password:
            raise UnauthorizedLogin()
        context = yield self._directory.mailbox(address)
        if context is None:
            raise UnauthorizedLogin()
        accepted = yield self._directory.bind(address, password)
        if not accepted:
            self.log.info("login failed for {address}", address=address)
            raise UnauthorizedLogin()
        return address


def build(settings, *, reactor, database, refresh_seconds, hashing):
    """
    C{(directory, checker)} for the LDAP backend (L{RealmSettings}
    C{settings} with C{ldap}): the checker binds or compares as its
    C{auth} says.
    """
    ldap = settings.ldap
    directory = LdapDirectory(
        settings=ldap,
        client=LdapClient(ldap, reactor),
        database=database,
        reactor=reactor,
        clock=reactor,
        data_dir=settings.data_dir,
        refresh_seconds=refresh_seconds,
    )
    if ldap.auth == "bind":
        return directory, LdapBindChecker(directory)
    checker = MailboxPasswordChecker(
        directory, reactor, scrypt_n=settings.scrypt_n, rehash=False, hashing=hashing,
    )
    return directory, checker
