"""
The one login check every protocol uses, through a C{twisted.cred} portal.

Logins are by full address; a bare local part, an unknown mailbox and a
wrong password fail with the same L{UnauthorizedLogin} and after the same
work (one scrypt at the configured cost, against a dummy hash when there
is no real one), so that nobody can probe which mailboxes exist, by the
answer or by its timing.  A paused mailbox still logs in here: pausing
stops sending only, which the submission realm enforces.
"""

import base64
import hashlib
import hmac
import os
from collections import OrderedDict

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from trekmail import idn
from trekmail.crypto import OWASP_SCRYPT_N, SCRYPT_P, SCRYPT_R, hash_password, verify_password
from trekmail.workerthreads import WorkerThreads


def normalise_address(username):
    """
    C{"Alice@Example.COM "} -> C{"alice@example.com"}, or C{None} if not
    an address; an internationalised login is put in the realm's form
    (L{trekmail.idn}), so C{用户@例子.测试} logs in as the mailbox it names.
    """
    if isinstance(username, bytes):
        try:
            username = username.decode("utf-8")
        except UnicodeDecodeError:
            return None
    address = username.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        return None
    try:
        return "%s@%s" % (idn.local_part(local), idn.ascii_domain(domain))
    except idn.NotAnIDN:
        return None


def dummy_hash(n):
    """
    A well-formed scrypt value at cost C{n} that no password matches (its
    digest is random): verifying against it costs what a real one does,
    without the hash it would take to make a real one.
    """
    salt, digest = (base64.b64encode(os.urandom(size)).decode("ascii") for size in (16, 32))
    return "{SCRYPT}n=%d,r=%d,p=%d$%s$%s" % (n, SCRYPT_R, SCRYPT_P, salt, digest)


def address_and_password(credentials):
    """C{IUsernamePassword} -> C{(normalised address or None, password as str)}."""
    password = credentials.password
    if isinstance(password, bytes):
        password = password.decode("utf-8", "replace")
    return normalise_address(credentials.username), password


class VerifiedPasswordCache:
    """
    Remembers recent successful checks so that a client reconnecting for
    every message does not pay for scrypt each time (Dovecot's auth cache
    does the same).  Entries are keyed by the stored hash, so a password
    reset or rehash invalidates them at once; only a keyed digest of the
    password is kept, never the password.
    """

    def __init__(self, size=4096):
        self._size = size
        self._key = os.urandom(32)
        self._entries = OrderedDict()

    def _digest(self, stored, password):
        return hmac.new(self._key, stored.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    def knows(self, address, stored, password):
        digest = self._entries.get((address, stored))
        if digest is None:
            return False
        self._entries.move_to_end((address, stored))
        return hmac.compare_digest(digest, self._digest(stored, password))

    def remember(self, address, stored, password):
        self._entries[(address, stored)] = self._digest(stored, password)
        self._entries.move_to_end((address, stored))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


@implementer(ICredentialsChecker)
class MailboxPasswordChecker:
    """
    Checks a mailbox password against the directory.  Hash work runs on
    C{hashing}, the server's threads for it (C{[auth] hash_threads} of
    them): a flood of logins then costs at most that many cores and never
    delays other blocking work.  A directory failure propagates as
    L{trekmail.realm.errors.DirectoryUnavailable}, never as a wrong
    password.

    @param rehash: C{False} when the directory's hashes are not ours to
        replace (LDAP): a login then never pays for a hash it would discard.
    @param hashing: the L{WorkerThreads} to hash on; without it, a pool of
        C{hash_threads} of its own, stopped with the reactor.
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(self, directory, reactor, *, scrypt_n=OWASP_SCRYPT_N, cache=None, rehash=True, hash_threads=2,
                 hashing=None):
        self._directory = directory
        self._reactor = reactor
        self._scrypt_n = scrypt_n
        self._cache = VerifiedPasswordCache() if cache is None else cache
        self._rehash = rehash
        self._dummy = dummy_hash(scrypt_n)
        self.hashing = hashing
        if hashing is None:
            self.hashing = WorkerThreads(reactor, hash_threads, "trekmail-password-hash")
            self.hashing.start()
            reactor.addSystemEventTrigger("during", "shutdown", self.hashing.stop)

    def _in_thread(self, function, *args):
        return self.hashing.run(function, *args)

    @defer.inlineCallbacks
    def requestAvatarId(self, credentials):
        address, password = address_and_password(credentials)
        context = None if address is None else (yield self._directory.mailbox(address))
        if context is None:
            yield self._in_thread(verify_password, password, self._dummy, self._scrypt_n)
            raise UnauthorizedLogin()
        stored = context.mailbox.password_hash
        if self._cache.knows(address, stored, password):
            return address
        ok, needs_rehash = yield self._in_thread(verify_password, password, stored, self._scrypt_n)
        if not ok:
            self.log.info("login failed for {address}", address=address)
            raise UnauthorizedLogin()
        if needs_rehash and self._rehash:
            fresh = yield self._in_thread(hash_password, password, self._scrypt_n)
            yield self._directory.set_password_hash(address, fresh, stored)
            stored = fresh
        self._cache.remember(address, stored, password)
        return address
