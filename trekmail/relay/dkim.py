"""
DKIM signing of outbound mail with the sending domain's own key (seed
000: "We sign every message with your domain's DKIM key automatically").

The signature covers exactly the bytes that go on the wire: the caller
passes the message through L{trekmail.delivery.wire_form} first, and
the client sends it unchanged apart from dot-stuffing, which the receiver
undoes before verifying.

The signed fields are those of RFC 6376 section 5.4.1 (L{SIGNED}) that
the message has, each instance of them.  A field it lacks is not named:
named, it would be signed as absent (section 5.4.2), and a hop that adds
a missing Date or Message-ID, as MTAs may, would break the signature.
A name is listed once more than it occurs (oversigned, section 8.15), so
that adding another instance breaks the signature, for From always and
for every other name of L{OVERSIGNED}: fields a message may have only
once (RFC 5322 section 3.6, RFC 2045), where a second instance is never
legitimate and is the one a reader's client may show instead of the
signed one.  Resent-* and List-* fields are not oversigned: a resender
(RFC 5322 section 3.6.6) and a list expander (RFC 2369) add them after we
sign, rightly.

This replaces dkimpy's signer (dkimpy stays the verifier in the tests):
dkimpy does RSA in pure Python, 7 ms per signature of a 10 KiB message
and 66 ms at 1 MiB on the benchmark machine (bench/dkim.py), which was
41 % of the relay's CPU.  Here the RSA signature is done by
C{cryptography} (OpenSSL) and relaxed/relaxed canonicalization (RFC 6376
sections 3.4.2 and 3.4.4) works on the whole body with bytes operations
that are skipped when there is nothing to change; only rsa-sha256,
relaxed/relaxed and no C{l=} are supported, as that is all we sign with,
and ed25519-sha256 (RFC 8463) beside it for domains with an Ed25519
selector: receivers that know Ed25519 get a signature as strong for a
fraction of the DNS record's size, the rest still verify the RSA one
(RFC 6376 section 4.2: a signature a verifier cannot use is ignored).
"""

import base64
import functools
import hashlib
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from trekmail.delivery import SigningError, wire_form
from trekmail.realm import dkimkeys

SIGNED = (
    b"from", b"reply-to", b"subject", b"date", b"to", b"cc",
    b"resent-date", b"resent-from", b"resent-to", b"resent-cc",
    b"in-reply-to", b"references",
    b"list-id", b"list-help", b"list-unsubscribe", b"list-subscribe", b"list-post",
    b"list-owner", b"list-archive",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"message-id",
)
OVERSIGNED = frozenset((
    b"from", b"reply-to", b"subject", b"date", b"to", b"cc", b"in-reply-to", b"references",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"message-id",
))

_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_BEFORE_CRLF = re.compile(rb" +\r\n")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FOLD = 72


class KeyMissing(SigningError):
    """The domain has no key file: absent, which is not the same as unusable."""


class UnsignableMessage(SigningError):
    """The message's header cannot be signed (verifiers would refuse it)."""

    permanent = True


def canonical_body(body):
    """
    Relaxed body canonicalization (RFC 6376 section 3.4.4) of a body in
    wire form, where every CR and LF is part of a CRLF.
    """
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = _WSP_BEFORE_CRLF.sub(b"\r\n", body)
    if body.endswith(b"\r\n\r\n") or body == b"\r\n":
        body = body.rstrip(b"\r\n")
        return body + b"\r\n" if body else b""
    if body and not body.endswith(b"\r\n"):
        return body + b"\r\n"
    return body


def _canonical_value(value):
    """Relaxed header canonicalization (RFC 6376 section 3.4.2) of one value."""
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return value.strip(b" \t")


def parse_headers(header_block):
    """
    C{[(lowercased name, canonical value), ...]} of a header block in wire
    form (ending in CRLF).  A line that is neither a field nor a
    continuation makes the message unsignable, as verifiers refuse it.
    """
    fields = []
    name = None
    parts = []
    for line in header_block.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and name is not None:
            parts.append(line)
            continue
        if name is not None:
            fields.append((name, _canonical_value(b"".join(parts))))
        found = _FIELD_NAME.match(line)
        if found is None:
            if line.startswith(b"From "):
                name = None
                continue
            raise UnsignableMessage("cannot DKIM-sign: malformed header line %r"
                                    % (line[:40].decode("ascii", "backslashreplace"),))
        name = found.group(1).lower()
        parts = [line[found.end():]]
    if name is not None:
        fields.append((name, _canonical_value(b"".join(parts))))
    return fields


def signed_names(fields):
    """The C{h=} list for C{fields}: L{SIGNED} names present, L{OVERSIGNED} ones once more."""
    counts = {}
    for name, _ in fields:
        counts[name] = counts.get(name, 0) + 1
    names = []
    for name in SIGNED:
        count = counts.get(name, 0)
        if name in OVERSIGNED and (count or name == b"from"):
            count += 1
        names.extend([name] * count)
    return names


def _select(fields, names):
    """The signed instances of C{names}, bottom-up per name (RFC 6376 section 5.4.2)."""
    chosen = []
    next_index = {}
    for name in names:
        index = next_index.get(name, len(fields))
        while index > 0:
            index -= 1
            if fields[index][0] == name:
                chosen.append(fields[index])
                break
        next_index[name] = index
    return chosen


def _split(message):
    end = message.find(b"\r\n\r\n")
    if message.startswith(b"\r\n"):
        return b"", message[2:]
    if end < 0:
        return message, b""
    return message[:end + 2], message[end + 4:]


@functools.lru_cache(maxsize=256)
def load_key(private_key_pem):
    """
    The RSA or Ed25519 key of a PEM, cached.  OpenSSL's own RSA key check
    (primality of the factors) takes about 40 ms holding the GIL, a stall
    for every connection; a signature checked with the public half
    (0.3 ms) shows instead that the key is whole, which is what matters
    for a key we generated ourselves, and OpenSSL checks each CRT result
    anyway.
    """
    try:
        key = serialization.load_pem_private_key(
            private_key_pem, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SigningError("unusable DKIM key: %s" % (e,)) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise SigningError("the DKIM key is neither an RSA nor an Ed25519 key")
    probe = b"trekmail DKIM key check"
    try:
        _verify(key.public_key(), _sign(key, probe), probe)
    except (InvalidSignature, ValueError) as e:
        raise SigningError("the DKIM key is damaged: %s" % (e or "its signatures do not verify",)) from None
    return key


def _sign(key, data):
    """RFC 6376 section 3.3.1 for RSA; RFC 8463 section 3 (Ed25519 over the SHA-256 hash) for Ed25519."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(hashlib.sha256(data).digest())
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _verify(public_key, signature, data):
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, hashlib.sha256(data).digest())
    else:
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


def signature_header(message, domain, selector, key, now):
    """
    The C{DKIM-Signature} header (name to final CRLF) for C{message},
    which must already be in wire form; C{key} is a PEM or a loaded key;
    C{now} (seconds) is its C{t=} tag.
    """
    if isinstance(key, bytes):
        key = load_key(key)
    headers, body = _split(message)
    body_hash = base64.b64encode(hashlib.sha256(canonical_body(body)).digest())
    domain = domain.encode("ascii")
    stamp = int(now)
    fields = parse_headers(headers)
    names = signed_names(fields)
    unsigned = b"".join((
        b"DKIM-Signature: v=1; a=",
        b"ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else b"rsa-sha256",
        b"; c=relaxed/relaxed; d=", domain, b"; i=@", domain,
        b";\r\n q=dns/txt; s=", selector.encode("ascii"), b"; t=", b"%d" % stamp,
        b";\r\n h=", _folded_names(names),
        b";\r\n bh=", body_hash,
        b";\r\n b=",
    ))
    hashed = [b"%s:%s\r\n" % field for field in _select(fields, names)]
    hashed.append(b"dkim-signature:" + _canonical_value(unsigned[len(b"DKIM-Signature:"):]))
    signature = base64.b64encode(_sign(key, b"".join(hashed)))
    first = _FOLD - len(b" b=")
    lines = [signature[:first]]
    lines.extend(signature[i:i + _FOLD] for i in range(first, len(signature), _FOLD))
    return unsigned + b"\r\n ".join(lines) + b"\r\n"


def _folded_names(names):
    lines = [[]]
    width = len(b" h=")
    for name in names:
        if width + len(name) + 3 > _FOLD and lines[-1]:
            lines.append([])
            width = 1
        lines[-1].append(name)
        width += len(name) + 3
    return b" :\r\n ".join(b" : ".join(line) for line in lines)


def sign(message, domain, selector, private_key_pem, now):
    """C{message} in wire form with a C{DKIM-Signature} header prepended, signed at C{now}."""
    message = wire_form(message)
    return signature_header(message, domain, selector, private_key_pem, now) + message


@dataclass(frozen=True)
class Signature:
    """A message's signature header and the key that made it, to reuse on retries."""

    key_id: tuple
    header: bytes


class Signer:
    """
    Signs with keys read from the data directory, cached until the key
    file changes so a rotated key applies without a restart (and a
    signature kept from an earlier attempt is then made again).  Call
    C{signature} off the reactor thread: it may read the key file, hashing
    1 MiB takes milliseconds, and the RSA operation (about 0.25 ms, which
    cryptography runs without the GIL) is then free to overlap the
    reactor's own work.
    """

    def __init__(self, data_dir, clock):
        """@param clock: C{clock()} is the signing time in seconds (the reactor's)."""
        self._data_dir = data_dir
        self._clock = clock
        self._keys = {}

    def _key(self, domain, selector):
        path = dkimkeys.key_path(self._data_dir, domain, selector)
        stamp = os.stat(path).st_mtime_ns
        cached = self._keys.get(path)
        if cached is None or cached[0] != stamp:
            pem = dkimkeys.read_private_key(self._data_dir, domain, selector)
            cached = (stamp, load_key(pem))
            self._keys[path] = cached
        return (domain, selector, stamp), cached[1]

    def _loaded(self, domain, selector):
        try:
            return self._key(domain, selector)
        except FileNotFoundError:
            raise KeyMissing("DKIM key of %s (selector %s) is missing: no file %s" % (
                domain, selector, dkimkeys.key_path(self._data_dir, domain, selector))) from None
        except OSError as e:
            raise SigningError("DKIM key of %s unreadable: %s" % (domain, e)) from None
        except SigningError as e:
            raise SigningError("DKIM key of %s: %s" % (domain, e)) from None

    def signature(self, message, domain, selector, earlier=None, ed25519_selector=None):
        """
        A L{Signature} of C{message} (in wire form); C{earlier}, this
        message's signature from a previous attempt, is returned as it is
        while the keys are unchanged.  With C{ed25519_selector}, an
        Ed25519 signature follows the RSA one, which stays on top for
        verifiers that check only the first (dkimpy's C{verify} does).
        """
        selectors = (selector,) if ed25519_selector is None else (selector, ed25519_selector)
        keys = [self._loaded(domain, s) for s in selectors]
        key_id = tuple(k for k, _ in keys)
        if earlier is not None and earlier.key_id == key_id:
            return earlier
        now = self._clock()
        return Signature(key_id, b"".join(
            signature_header(message, domain, s, key, now) for s, (_, key) in zip(selectors, keys)))

    def sign(self, message, domain, selector):
        """C{message} in wire form with a C{DKIM-Signature} header prepended."""
        message = wire_form(message)
        return self.signature(message, domain, selector).header + message
