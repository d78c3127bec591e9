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
