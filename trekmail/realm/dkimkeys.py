"""
Per-domain DKIM keys: generated on C{domain add}, the private half kept
in a 0600 file under the data directory (never in the database, which
operators copy around more freely), the public half in the database for
C{domain dns} and C{domain verify}.
"""

import base64
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from trekmail.durable import replace_private
from trekmail.realm.clientrecords import client_records

DEFAULT_SELECTOR = "dkim"
KEY_BITS = 2048
RSA = "rsa"
ED25519 = "ed25519"


def key_path(data_dir, domain, selector=DEFAULT_SELECTOR):
    return os.path.join(data_dir, "dkim", "%s.%s.pem" % (domain, selector))


def generate(data_dir, domain, selector=DEFAULT_SELECTOR, algorithm=RSA):
    """
    Write a new private key and return the public key as the base64 text
    of a DKIM C{p=} tag: for RSA the DER SubjectPublicKeyInfo (RFC 6376
    section 3.6.1), for Ed25519 the raw 32 bytes (RFC 8463 section 4).
    The file is created 0600 before any key byte is written, so the key
    is never readable by others even briefly.
    """
    if algorithm == ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    replace_private(key_path(data_dir, domain, selector), pem)
    return base64.b64encode(public).decode("ascii")


def read_private_key(data_dir, domain, selector=DEFAULT_SELECTOR):
    with open(key_path(data_dir, domain, selector), "rb") as f:
        return f.read()


def txt_value(public_key, algorithm=RSA):
    return "v=DKIM1; k=%s; p=%s" % (algorithm, public_key)


def dns_records(domain, published, dkim):
    """
    The records a customer publishes for C{domain}, pointing at
    L{PublishedNames} C{published}: (name, type, value).  C{dkim}: the
    DKIM lines (L{trekmail.realm.dkimselectors.records}).
    """
    return [
        (domain.name, "MX", "10 %s." % (published.hostname,)),
        (domain.name, "TXT", "v=spf1 include:%s -all" % (published.spf_include,)),
        *dkim,
        ("_dmarc.%s" % (domain.name,), "TXT", published.dmarc_record),
    ] + client_records(domain.name, published)
