"""
A stand-in for an external SMTP provider (SES, SendGrid...): a Twisted
ESMTP server on loopback that requires AUTH, speaks implicit TLS or
STARTTLS with a certificate from a test CA (or a self-signed one the
client must refuse), and records what it received, including every
password it was offered.
"""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.cred import checkers, credentials, portal
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, endpoints, protocol, ssl
from twisted.mail import smtp
from twisted.mail._cred import LOGINCredentials, PLAINCredentials
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer


def _name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(subject, issuer, public_key, signing_key, ca, names=("localhost", "127.0.0.1")):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _general_name(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class TestCA:
    """
    A CA the client is told to trust, one leaf for localhost/127.0.0.1, one
    it signed for another name only, and a self-signed one.
    """

    def __init__(self):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _certificate(_name("TrekMail test CA"), _name("TrekMail test CA"), ca_key.public_key(), ca_key, True)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(_name("localhost"), self.ca.subject, leaf_key.public_key(), ca_key, False)
        self.server_options = _options(leaf_key, leaf)
        other = _certificate(_name("smtp.other.test"), self.ca.subject, leaf_key.public_key(), ca_key, False,
                             names=("smtp.other.test",))
        self.wrong_name_options = _options(leaf_key, other)
        own_key = ec.generate_private_key(ec.SECP256R1())
        own = _certificate(_name("localhost"), _name("localhost"), own_key.public_key(), own_key, False)
        self.self_signed_options = _options(own_key, own)

    @property
    def trust_root(self):
        return ssl.Certificate.loadPEM(self.ca.public_bytes(serialization.Encoding.PEM))


def _options(key, certificate):
    pem = _pem(key) + certificate.public_bytes(serialization.Encoding.PEM)
    return ssl.PrivateCertificate.loadPEM(pem).options()


@implementer(checkers.ICredentialsChecker)
class RecordingChecker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, username, password, seen):
        self._username = username.encode()
        self._password = password.encode()
        self._seen = seen

    def requestAvatarId(self, offered):
        self._seen.append((offered.username, offered.password))
        if (offered.username, offered.password) == (self._username, self._password):
            return defer.succeed(offered.username)
        return defer.fail(UnauthorizedLogin())


class _Message:
    def __init__(self, sink):
        self._sink = sink
        self._lines = []

    def lineReceived(self, line):
        self._lines.append(line)

    def eomReceived(self):
        self._sink.append(b"\n".join(self._lines))
        return defer.succeed(b"queued")

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, provider, avatar):
        self._provider = provider
        self._avatar = avatar

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        if self._avatar is None:
            raise smtp.SMTPBadSender(origin, 530, "5.7.0 Authentication required")
        if self._provider.temporary:
            raise smtp.SMTPBadSender(origin, 451, "4.3.0 Provider busy, try later")
        self._provider.senders.append(str(origin))
        return origin

    def validateTo(self, user):
        self._provider.recipients.append(str(user.dest))
        return lambda: _Message(self._provider.messages)


@implementer(portal.IRealm)
class _Realm:
    def __init__(self, provider):
        self._provider = provider

    def requestAvatar(self, avatar_id, mind, *interfaces):
        return smtp.IMessageDelivery, _Delivery(self._provider, avatar_id), lambda: None


class _Server(smtp.ESMTP):
    def __init__(self, provider):
        super().__init__({b"PLAIN": PLAINCredentials, b"LOGIN": LOGINCredentials},
                         provider.starttls_options)
        self.portal = provider.portal
        self.host = b"provider.test"
        self.delivery = _Delivery(provider, None)

    def extensions(self):
        extensions = super().extensions()
        if self.transport is not None and not self.startedTLS and self.ctx is not None:
            extensions.pop(b"AUTH", None)
        return extensions


class _Factory(protocol.Factory):
    def __init__(self, provider):
        self.provider = provider

    def buildProtocol(self, addr):
        server = _Server(self.provider)
        server.factory = self
        return server


class Provider:
    """
    The stand-in.  C{mode}: C{"implicit"}, C{"starttls"} or C{"none"};
    C{trusted=False} serves the self-signed certificate instead of the CA's,
    C{wrong_name=True} the CA's certificate for another host.
    """

    def __init__(self, ca, mode="starttls", trusted=True, username="apikey", password="SG.secret-key",
                 wrong_name=False):
        self.mode = mode
        options = ca.server_options if trusted else ca.self_signed_options
        if wrong_name:
            options = ca.wrong_name_options
        self.starttls_options = options if mode == "starttls" else None
        self._implicit_options = options if mode == "implicit" else None
        self.seen_credentials = []
        self.senders = []
        self.recipients = []
        self.messages = []
        self.temporary = False
        self.portal = portal.Portal(_Realm(self), [RecordingChecker(username, password, self.seen_credentials)])

    @defer.inlineCallbacks
    def listen(self, reactor):
        factory = _Factory(self)
        if self._implicit_options is not None:
            factory = TLSMemoryBIOFactory(self._implicit_options, False, factory)
        endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port = yield endpoint.listen(factory)
        return self.port.getHost().port

    def stop(self):
        return self.port.stopListening()
