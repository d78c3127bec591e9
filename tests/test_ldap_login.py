"""
Logins through a C{twisted.cred} Portal whose checker is the one
C{[realm] backend = ldap} builds, against a real slapd with the sample
directory: every password scheme in both C{ldap_auth} modes, filter
injection, and a directory outage as a temporary failure that recovers.
"""

import os

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface import Interface, implementer

from trekmail.realm import database, ldapdirectory, schema
from trekmail.realm.checkers import MailboxPasswordChecker
from trekmail.realm.errors import DirectoryUnavailable
from trekmail.realm.ldapdirectory import LdapBindChecker
from trekmail.realm.model import Account, Domain, Mailbox, MailboxContext
from tests.slapd import SAMPLE_PASSWORDS, SUFFIX, Slapd, ldap_config
from trekmail import settings

INJECTIONS = (
    "*",
    "*)(uid=*",
    "*@example.com",
    "*)(mail=*))(|(mail=*@example.com",
    "ssha@example.com)(|(mail=*",
    "ssha*@example.com",
    "*@*",
)


class IMailUser(Interface):
    pass


@implementer(IRealm)
class AddressRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return IMailUser, avatar_id, lambda: None


class LoginMixin:
    """A slapd, and a Portal over the checker that C{ldapdirectory.build} chooses."""

    auth = None

    def setUp(self):
        self.slapd = Slapd(self.mktemp()).start()
        self.addCleanup(self.slapd.remove)
        self.data_dir = os.path.abspath(self.mktemp())
        self.portal = self.make_portal()

    def make_portal(self, **realm):
        config = ldap_config(self.slapd, self.data_dir, ldap_auth=self.auth, **realm)
        db = database.connect(config.database_path)
        database.upgrade(db, schema.SCHEMAS)
        threaded = database.ThreadedDatabase(db, reactor)
        threaded.start()
        self.addCleanup(threaded.stop)
        self.directory, self.checker = ldapdirectory.build(settings.realm(config), reactor=reactor, database=threaded, refresh_seconds=config.get("realm", "refresh_seconds"), hashing=None)
        self.directory.start()
        self.addCleanup(self.directory.stop)
        return Portal(AddressRealm(), [self.checker])

    def login(self, username, password, portal=None):
        credentials = UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))
        d = (portal or self.portal).login(credentials, None, IMailUser)
        return d.addCallback(lambda result: result[1])

    @defer.inlineCallbacks
    def test_every_scheme_logs_in(self):
        for address, password in sorted(SAMPLE_PASSWORDS.items()):
            self.assertEqual((yield self.login(address.upper(), password)), address)

    @defer.inlineCallbacks
    def test_wrong_passwords_fail(self):
        for address, password in sorted(SAMPLE_PASSWORDS.items()):
            yield self.assertFailure(self.login(address, password + "x"), UnauthorizedLogin)
            yield self.assertFailure(self.login(address, password[:-1]), UnauthorizedLogin)
        yield self.assertFailure(self.login("ssha@example.com", ""), UnauthorizedLogin)
        yield self.assertFailure(self.login("nobody@example.com", "ssha-Secret-1"), UnauthorizedLogin)
        yield self.assertFailure(self.login("ssha", "ssha-Secret-1"), UnauthorizedLogin)

    @defer.inlineCallbacks
    def test_another_mailboxs_password_fails(self):
        yield self.assertFailure(self.login("ssha@example.com", "argon2-Secret-5"), UnauthorizedLogin)

    @defer.inlineCallbacks
    def test_filter_injection_logs_in_nowhere(self):
        for username in INJECTIONS:
            for password in ("*", "ssha-Secret-1", "x"):
                yield self.assertFailure(self.login(username, password), UnauthorizedLogin)

    @defer.inlineCallbacks
    def test_outage_is_temporary_then_recovers(self):
        portal = self.make_portal(refresh_seconds="0")
        self.assertEqual((yield self.login("ssha@example.com", "ssha-Secret-1", portal)), "ssha@example.com")
        self.slapd.stop()
        for address, password in (("ssha@example.com", "ssha-Secret-1"), ("argon2@example.com", "wrong")):
            yield self.assertFailure(self.login(address, password, portal), DirectoryUnavailable)
        self.slapd.start()
        self.assertEqual((yield self.login("argon2@example.com", "argon2-Secret-5", portal)), "argon2@example.com")


class BindLoginTests(LoginMixin, unittest.TestCase):
    auth = "bind"

    def test_builds_a_bind_checker(self):
        self.assertIsInstance(self.checker, LdapBindChecker)

    @defer.inlineCallbacks
    def test_password_change_applies_at_once(self):
        """Binds are never cached: the directory decides every login."""
        yield self.login("ssha@example.com", "ssha-Secret-1")
        self.slapd.modify("mail=ssha@example.com,ou=mailboxes," + SUFFIX, userPassword=["n3w-Secret"])
        yield self.assertFailure(self.login("ssha@example.com", "ssha-Secret-1"), UnauthorizedLogin)
        self.assertEqual((yield self.login("ssha@example.com", "n3w-Secret")), "ssha@example.com")

    @defer.inlineCallbacks
    def test_outage_during_bind_is_temporary(self):
        """The mailbox is cached, the bind is not: a down directory fails the bind temporarily."""
        yield self.login("ssha@example.com", "ssha-Secret-1")
        self.slapd.stop()
        yield self.assertFailure(self.login("ssha@example.com", "ssha-Secret-1"), DirectoryUnavailable)


class CompareLoginTests(LoginMixin, unittest.TestCase):
    auth = "compare"

    def test_builds_a_compare_checker(self):
        self.assertIsInstance(self.checker, MailboxPasswordChecker)


class NoRehashTests(unittest.TestCase):
    """A checker told not to rehash never hashes or writes, even for legacy schemes."""

    @defer.inlineCallbacks
    def test_legacy_hash_is_not_replaced(self):
        written = []

        class Directory:
            def mailbox(self, address):
                account = Account(1, "o@example.com", True, None, "starter", True, None)
                domain = Domain("example.com", 1, 0.0, "dkim", "")
                stored = "{SSHA}BXkkov//NFU8ttw3J5MtClWHPXpSYpqN"
                return defer.succeed(
                    MailboxContext(Mailbox(address, "example.com", stored, False), domain, account)
                )

            def set_password_hash(self, *args):
                written.append(args)
                return defer.succeed(None)

        for rehash, expected in ((False, 0), (True, 1)):
            del written[:]
            checker = MailboxPasswordChecker(Directory(), reactor, scrypt_n=1024, rehash=rehash)
            avatar = yield checker.requestAvatarId(UsernamePassword(b"ssha@example.com", b"ssha-Secret-1"))
            self.assertEqual(avatar, "ssha@example.com")
            self.assertEqual(len(written), expected)
