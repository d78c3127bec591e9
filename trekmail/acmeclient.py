"""
One ACME order (RFC 8555) through certbot's C{acme} library: the account
(its key kept under the data dir and registered once, later orders find
it again by that key, RFC 8555 section 7.3.1), an HTTP-01 challenge per
domain (section 8.3) and the finalized certificate with a fresh key.

Every call here blocks on the network (C{requests}): run L{obtain} on a
worker thread, never on the reactor.
"""

import datetime
from dataclasses import dataclass

import josepy
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from trekmail.durable import replace_private

USER_AGENT = "trekmail"
ORDER_SECONDS = 120
"""How long the CA may take to validate and issue before the attempt is given up (and retried later)."""


@dataclass(frozen=True)
class AcmeSettings:
    """
    @ivar directory_url: the CA's directory (C{[acme] directory_url}).
    @ivar email: the account's contact, or C{""}.
    @ivar domains: the names the certificate is for.
    @ivar account_key: the file of the account's key (made on first use).
    @ivar pair: the file the key and certificate chain are kept in.
    @ivar ca_file: a PEM bundle the directory's own certificate must chain
        to instead of the system's (a test CA), or C{""}.
    @ivar renew_before: seconds before expiry a certificate is renewed.
    """

    directory_url: str
    email: str
    domains: tuple
    account_key: str
    pair: str
    ca_file: str = ""
    renew_before: float = 30 * 86400.0


def _new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def account_key(path):
    """The account's key from C{path}, made and kept there (0600) the first time."""
    try:
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError:
        key = _new_key()
        replace_private(path, _pem(key), 0o600)
        return key


def obtain(settings, publish, withdraw):
    """
    Order a certificate for C{settings.domains} and keep it, with its new
    key, in C{settings.pair}; blocks.  C{publish(token, key_authorization)}
    must make the HTTP-01 response servable before it returns;
    C{withdraw(token)} removes it once the order is done.

    @return: the PEM written (key, then the full chain).
    @raise Exception: whatever the CA or the network answered; nothing is written then.
    """
    jwk = josepy.JWKRSA(key=account_key(settings.account_key))
    net = client.ClientNetwork(jwk, user_agent=USER_AGENT, verify_ssl=settings.ca_file or True)
    acme = client.ClientV2(client.ClientV2.get_directory(settings.directory_url, net), net)
    registration = messages.NewRegistration.from_data(email=settings.email or None, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as e:
        net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
    key_pem = _pem(_new_key())
    order = acme.new_order(crypto_util.make_csr(key_pem, list(settings.domains)))
    tokens = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            challenge = next(c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01))
            response, validation = challenge.response_and_validation(jwk)
            token = challenge.chall.encode("token")
            publish(token, validation)
            tokens.append(token)
            acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_SECONDS)
        order = acme.poll_and_finalize(order, deadline)
    finally:
        for token in tokens:
            withdraw(token)
    pem = key_pem + order.fullchain_pem.encode("ascii")
    replace_private(settings.pair, pem, 0o600)
    return pem
