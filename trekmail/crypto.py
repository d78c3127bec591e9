"""
Password hashes, stored with an LDAP-style scheme prefix.

New hashes are scrypt at OWASP's parameters (N=2^17, r=8, p=1), which
needs nothing beyond the standard library.  The prefix lets the same
column hold values imported from a directory (C{{SSHA}}, C{{SSHA512}},
C{{CRYPT}}, C{{ARGON2}}), so operators can migrate without resetting
every password; L{verify_password} says when a value should be rehashed.
"""

import base64
import hashlib
import hmac
import os
import re
import warnings

from trekmail.durable import replace_private

SCRYPT_R = 8
SCRYPT_P = 1
OWASP_SCRYPT_N = 2**17

_SCRYPT = re.compile(r"^\{SCRYPT\}n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def _scrypt(password, salt, n, r, p):
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def hash_password(password, n=OWASP_SCRYPT_N):
    salt = os.urandom(16)
    digest = _scrypt(password.encode("utf-8"), salt, n, SCRYPT_R, SCRYPT_P)
    return "{SCRYPT}n=%d,r=%d,p=%d$%s$%s" % (
        n,
        SCRYPT_R,
        SCRYPT_P,
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"),
    )


def _verify_scrypt(password, stored, wanted_n):
    match = _SCRYPT.match(stored)
    if match is None:
        return False, False
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    salt = base64.b64decode(match.group(4))
    expected = base64.b64decode(match.group(5))
    actual = _scrypt(password, salt, n, r, p)
    ok = hmac.compare_digest(actual, expected)
    return ok, ok and (n, r, p) != (wanted_n, SCRYPT_R, SCRYPT_P)


def _verify_salted_sha(algorithm, digest_size):
    def verify(password, encoded):
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            return False
        digest, salt = raw[:digest_size], raw[digest_size:]
        actual = hashlib.new(algorithm, password + salt).digest()
        return hmac.compare_digest(actual, digest)

    return verify


def _verify_crypt(password, encoded):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    try:
        actual = crypt.crypt(password.decode("utf-8"), encoded)
    except (UnicodeDecodeError, OSError):
        return False
    return actual is not None and hmac.compare_digest(actual, encoded)


def _verify_argon2(password, encoded):
    try:
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error, InvalidHashError
    except ImportError:
        return False
    try:
        return PasswordHasher().verify(encoded, password)
    except (Argon2Error, InvalidHashError):
        return False


_LEGACY = {
    "{SSHA}": _verify_salted_sha("sha1", 20),
    "{SSHA512}": _verify_salted_sha("sha512", 64),
    "{CRYPT}": _verify_crypt,
    "{ARGON2}": _verify_argon2,
}


def verify_password(password, stored, wanted_n=OWASP_SCRYPT_N):
    """
    Check C{password} (str) against a stored value.

    @return: C{(ok, needs_rehash)}; a match on any scheme other than
        scrypt at C{wanted_n} asks to be rehashed.
    """
    secret = password.encode("utf-8")
    if stored.startswith("{SCRYPT}"):
        return _verify_scrypt(secret, stored, wanted_n)
    for prefix, verify in _LEGACY.items():
        if stored[: len(prefix)].upper() == prefix:
            ok = verify(secret, stored[len(prefix):])
            return ok, ok
    return False, False


class SecretKeyError(Exception):
    """The key file for secrets at rest is missing, unreadable, too open or corrupt."""


def _key_id():
    return os.urandom(4).hex()


class SecretKeyring:
    """
    Authenticated encryption (AES-256-GCM) for secrets the server must use
    again in the clear, such as an external SMTP provider's password.

    The keys live in a file outside the database (mode 0600), so a copy of
    the database alone reveals nothing.  Each value carries the id of the
    key that sealed it and is bound to a context (the row it belongs to),
    so a value copied onto another row fails to open.  The file lists the
    current key first; older keys stay in it only while a rotation is
    re-encrypting, which keeps every stored value readable if the rotation
    is interrupted at any point.
    """

    PREFIX = "aesgcm"

    def __init__(self, path, keys, stamp=None):
        self.path = path
        self._keys = list(keys)
        self._stamp = stamp
        self._derived = {}

    def _refresh(self):
        """
        Pick up a rotation done by another process (the CLI while the
        server runs): sealing with a retired key would lose the value.
        """
        try:
            status = os.stat(self.path)
        except OSError:
            return
        if (status.st_ino, status.st_mtime_ns) != self._stamp:
            fresh = self.load(self.path, create=False)
            self._keys, self._stamp = fresh._keys, fresh._stamp

    @classmethod
    def load(cls, path, create=True):
        try:
            status = os.stat(path)
        except FileNotFoundError:
            if not create:
                raise SecretKeyError("the secret key file %s does not exist" % (path,)) from None
            keyring = cls(path, [(_key_id(), os.urandom(32))])
            keyring.save()
            return keyring
        if status.st_mode & 0o077:
            raise SecretKeyError(
                "the secret key file %s is readable by others (mode %o): chmod 600 it"
                % (path, status.st_mode & 0o777)
            )
        keys = []
        with open(path, encoding="ascii") as f:
            for number, line in enumerate(f, 1):
                if not line.strip() or line.startswith("#"):
                    continue
                try:
                    key_id, encoded = line.split()
                    key = base64.b64decode(encoded, validate=True)
                except ValueError:
                    key = b""
                if len(key) != 32:
                    raise SecretKeyError("%s line %d is not a key" % (path, number))
                keys.append((key_id, key))
        if not keys:
            raise SecretKeyError("the secret key file %s holds no key" % (path,))
        return cls(path, keys, (status.st_ino, status.st_mtime_ns))

    def save(self):
        """Write the key file atomically, created 0600 before any key byte is written."""
        lines = ["# TrekMail secrets-at-rest keys; the first is current. Keep private.\n"]
        lines += ["%s %s\n" % (key_id, base64.b64encode(key).decode("ascii")) for key_id, key in self._keys]
        replace_private(self.path, "".join(lines).encode("ascii"))
        status = os.stat(self.path)
        self._stamp = (status.st_ino, status.st_mtime_ns)

    @property
    def current_id(self):
        return self._keys[0][0]

    def seal(self, plaintext, context):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._refresh()
        key_id, key = self._keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), context)
        return "%s:%s:%s" % (self.PREFIX, key_id, base64.b64encode(nonce + sealed).decode("ascii"))

    def open(self, value, context):
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        prefix, _, rest = value.partition(":")
        key_id, _, encoded = rest.partition(":")
        if key_id not in dict(self._keys):
            self._refresh()
        key = dict(self._keys).get(key_id)
        if prefix != self.PREFIX or key is None:
            raise SecretKeyError("a stored secret was sealed with a key not in %s" % (self.path,))
        raw = base64.b64decode(encoded)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], context).decode("utf-8")
        except InvalidTag:
            raise SecretKeyError("a stored secret failed authentication (tampered or moved)") from None

    def derive(self, info):
        """
        A 32-byte subkey of each key, current first, for C{info} (HKDF,
        RFC 5869), so a MAC made with it reveals nothing about the keys
        that seal stored secrets, and one use's MACs never pass for another's.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        self._refresh()
        stamp, derived = self._derived.get(info, (None, None))
        if stamp != self._stamp or derived is None:
            derived = [HKDF(hashes.SHA256(), 32, None, info).derive(key) for _, key in self._keys]
            self._derived[info] = (self._stamp, derived)
        return derived

    def begin_rotation(self):
        """Add a new current key, keeping the old ones so nothing becomes unreadable."""
        self._refresh()
        self._keys.insert(0, (_key_id(), os.urandom(32)))
        self.save()

    def finish_rotation(self):
        """Drop every key but the current one, once all values are re-sealed with it."""
        del self._keys[1:]
        self.save()
