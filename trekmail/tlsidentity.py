"""
The certificates every TLS listener and STARTTLS serves, replaceable
while the server runs.

Each handshake takes the context current at that moment, so L{reload}
changes the pair for new connections while established ones keep the one
they were made with: a certificate is renewed without dropping an IMAP
IDLE session.  Besides the C{[tls]} pair, extra pairs (one PEM file each:
the key and its certificate chain) are chosen by the name the client asks
for in its ClientHello (SNI, RFC 6066 section 3); a client asking for no
name, or for one no extra pair covers, gets the default pair.
"""

import os
from dataclasses import dataclass

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from trekmail import tls

log = Logger()


@dataclass(frozen=True)
class IdentitySettings:
    """
    @ivar certificate: the default certificate file (C{[tls] certificate}).
    @ivar private_key: its key file (C{[tls] private_key}).
    @ivar hostname: C{[server] hostname}, the name the default pair should cover.
    @ivar sni_directory: a directory of extra pairs, C{*.pem}, or C{""}.
    @ivar acme_pair: the file an ACME client keeps its pair in, or C{""};
        used once it exists, and as the default when it covers C{hostname}.
    """

    certificate: str
    private_key: str
    hostname: str
    sni_directory: str = ""
    acme_pair: str = ""


@implementer(IOpenSSLServerConnectionCreator)
class ServerIdentity:
    """
    What C{TLSMemoryBIOFactory} and C{startTLS} are given in place of
    C{CertificateOptions}.

    @raise tls.CertificateError: from the constructor, when a pair cannot be used.
    """

    def __init__(self, settings):
        self.settings = settings
        self._context = load_context(settings)

    def reload(self):
        """
        Read every pair again; on a problem keep serving the current ones
        and log why (a half-copied file must not take TLS down).
        """
        try:
            self._context = load_context(self.settings)
        except tls.CertificateError as e:
            log.error("certificates not reloaded, the current ones are kept: {problem}", problem=str(e))
            return False
        log.info("certificates reloaded")
        return True

    def serverConnectionForTLS(self, protocol):
        return SSL.Connection(self._context, None)


def load_context(settings):
    """
    The OpenSSL context of the default pair, choosing among the extra
    pairs by SNI.  The default pair is made or remade first as
    L{tls.server_options} does, and warned about when it does not cover
    the hostname.
    """
    named = load_directory(settings.sni_directory)
    default = None
    if settings.acme_pair and os.path.exists(settings.acme_pair):
        names, context = load_file("acme", settings.acme_pair)
        named.insert(0, (names, context))
        if any(tls.name_matches(name, settings.hostname) for name in names):
            default = context
    if default is None:
        default = tls.server_options(settings.certificate, settings.private_key, settings.hostname).getContext()
    if named:
        default.set_tlsext_servername_callback(_chooser(named))
    return default


def load_file(key, path):
    """C{(names, context)} of one file holding a key and its certificate chain; errors name C{key}."""
    pem = tls.read_pem(key, path)
    try:
        options, leaf = tls.load_pair(pem, pem)
    except tls.CertificateError as e:
        raise tls.CertificateError(key, "%s: %s" % (path, e)) from None
    return tls.dns_names(leaf), options.getContext()


def load_directory(directory):
    """C{[(names, context)]} of every C{*.pem} in C{directory}, by file name."""
    if not directory:
        return []
    try:
        files = sorted(name for name in os.listdir(directory) if name.endswith(".pem"))
    except OSError as e:
        raise tls.CertificateError("sni_directory", "cannot list %s: %s" % (directory, e.strerror)) from None
    return [load_file("sni_directory", os.path.join(directory, name)) for name in files]


def _chooser(named):
    """The servername callback: switch the connection to the first pair covering the name asked for."""

    def choose(connection):
        asked = connection.get_servername()
        if not asked:
            return
        asked = asked.decode("ascii", "replace")
        for names, context in named:
            if any(tls.name_matches(pattern, asked) for pattern in names):
                connection.set_context(context)
                return

    return choose
