"""
DKIM signing of outbound mail with the sending domain's own key (seed
000: "We sign every message with your domain's DKIM key automatically").

The signature covers exactly the bytes that go on the wire: the caller
passes the message through L{trekmail.relay.client.wire_form} first, and
the client sends it unchanged apart from dot-stuffing, which the receiver
undoes before verifying.

From is listed twice in C{h=} (oversigned), so nobody can add a second
From header after signing without breaking the signature; the other
headers named are signed whether or not present, for the same reason.
"""

import os

import dkim

from trekmail.realm import dkimkeys
from trekmail.relay.client import wire_form

SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"from")


class SigningError(Exception):
    """The domain's key is missing or unusable; the message must wait."""


def sign(message, domain, selector, private_key_pem):
    """C{message} in wire form with a C{DKIM-Signature} header prepended."""
    message = wire_form(message)
    signature = dkim.sign(
        message,
        selector.encode("ascii"),
        domain.encode("ascii"),
        private_key_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=b"rsa-sha256",
        include_headers=list(SIGNED_HEADERS),
        linesep=b"\r\n",
    )
    return signature + message


class Signer:
    """
    Signs with keys read from the data directory, cached until the key
    file changes so a rotated key applies without a restart.  Call
    C{sign} off the reactor thread: an RSA signature and hashing a large
    body take milliseconds.
    """

    def __init__(self, data_dir):
        self._data_dir = data_dir
        self._keys = {}

    def _key(self, domain, selector):
        path = dkimkeys.key_path(self._data_dir, domain, selector)
        stamp = os.stat(path).st_mtime_ns
        cached = self._keys.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, dkimkeys.read_private_key(self._data_dir, domain, selector))
            self._keys[path] = cached
        return cached[1]

    def sign(self, message, domain, selector):
        try:
            return sign(message, domain, selector, self._key(domain, selector))
        except (OSError, dkim.DKIMException) as e:
            raise SigningError("%s: %s" % (domain, e)) from None
