"""
The server's TLS identity.

When the configured certificate and key are both absent, a self-signed
pair is generated once (so the quick start needs no openssl step) and
kept, so clients that pinned it on first use keep trusting it.  A present
but unreadable file is an error, never silently replaced.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet import ssl

from trekmail.config import ConfigError
from trekmail.durable import replace_private


def self_signed(hostname, now=None):
    """A 2048-bit RSA key and a ten-year certificate for C{hostname}: (cert_pem, key_pem)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    alternatives = [x509.DNSName(hostname), x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )


def ensure_certificate(config):
    cert_path = config.get("tls", "certificate")
    key_path = config.get("tls", "private_key")
    if not os.path.exists(cert_path) and not os.path.exists(key_path):
        cert_pem, key_pem = self_signed(config.get("server", "hostname"))
        replace_private(key_path, key_pem, 0o600)
        replace_private(cert_path, cert_pem, 0o644)


def server_options(config):
    """
    C{CertificateOptions} for every TLS listener and STARTTLS, from the
    configured files (generated first if both are absent).

    @raise ConfigError: naming the key whose file cannot be used.
    """
    ensure_certificate(config)
    key_pem = _read(config, "private_key")
    cert_pem = _read(config, "certificate")
    try:
        certificate = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
    except Exception as e:
        raise ConfigError("tls", "certificate", "cannot load the certificate and key: %s" % (e,)) from None
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def _read(config, key):
    path = config.get("tls", key)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("tls", key, "cannot read %s: %s" % (path, e.strerror)) from None

