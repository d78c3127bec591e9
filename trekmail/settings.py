"""
Where the wiring turns the L{Config} into the plain settings the layers
take: each layer declares the small frozen dataclass it needs
(L{trekmail.realm.settings.RealmSettings},
L{trekmail.realm.ldapsettings.LdapSettings}, ...) and only this module,
L{trekmail.service} and L{trekmail.cli} read keys, once, at start-up.  A
value that cannot work stops start-up here with a L{ConfigError} naming
its key.
"""

from ldap3.core.exceptions import LDAPInvalidFilterError
from ldap3.operation.search import parse_filter
from OpenSSL import crypto
from twisted.internet import ssl

from trekmail import acmeclient, tls
from trekmail.admin import api
from trekmail.config import ConfigError
from trekmail.inbound.verdicts import AuthSettings
from trekmail.realm import ldapsettings
from trekmail.realm.dkimselectors import DkimSettings
from trekmail.realm.settings import ClientPorts, PublishedNames, RealmSettings
from trekmail.tlsidentity import IdentitySettings, ServerIdentity


def realm(config):
    """The realm's settings; the LDAP ones are read and checked only with C{[realm] backend = ldap}."""
    return RealmSettings(
        data_dir=config.data_dir,
        published=PublishedNames(hostname=config.get("server", "hostname"),
                                 spf_include=config.get("dns", "spf_include"),
                                 dmarc_record=config.get("dns", "dmarc_record"),
                                 ports=client_ports(config)),
        scrypt_n=config.get("realm", "password_scrypt_n"),
        ldap=ldap(config) if config.get("realm", "backend") == "ldap" else None,
        dkim=dkim(config),
    )


def dkim(config):
    """C{[dkim]}: how long a replaced selector stays published, the CNAME zone, Ed25519 dual signing."""
    return DkimSettings(overlap=config.get("dkim", "overlap_days") * 86400,
                        cname_zone=config.get("dkim", "cname_zone"),
                        ed25519=config.get("dkim", "ed25519"))


def inbound(config):
    """The MX's authentication checks: our authserv-id, the resolver they ask, C{[mx] dmarc_reject}."""
    return AuthSettings(authserv_id=config.get("server", "hostname"), nameservers=config.get("dns", "nameservers"),
                        dmarc_reject=config.get("mx", "dmarc_reject"))


STANDARD_PORTS = {"submissions": 465, "submission": 587, "imaps": 993, "imap": 143, "https": 443}


def listen_port(description, standard):
    """
    The port a C{[listen]} endpoint description binds (C{tcp:PORT},
    C{ssl:port=PORT}...), or C{standard} for one that names none (a
    systemd socket, say); C{None} when the listener is off.
    """
    if not description:
        return None
    kind, _, rest = description.partition(":")
    if kind.lower() not in ("tcp", "tcp6", "ssl"):
        return standard
    for i, argument in enumerate(rest.split(":")):
        name, sep, value = argument.partition("=")
        candidate = value if sep and name == "port" else (argument if not sep and i == 0 else "")
        if candidate.isdigit():
            return int(candidate)
    return standard


def client_ports(config):
    """The ports clients are told to use (SRV records, autoconfig): those the listeners bind."""
    return ClientPorts(**{name: listen_port(config.get("listen", name), port) for name, port in STANDARD_PORTS.items()})


def admin_token(config):
    """The admin API's bearer token: C{[admin] token}, else the token file's (made on first use)."""
    return api.load_token(config.get("admin", "token"), config.get("admin", "token_file") or config.data_path("admin.token"))


def tls_identity(config):
    """What C{[tls]} (and C{[acme]}, once it got a pair) has every listener serve."""
    return IdentitySettings(
        certificate=config.get("tls", "certificate"), private_key=config.get("tls", "private_key"),
        hostname=config.get("server", "hostname"), sni_directory=config.get("tls", "sni_directory"),
        acme_pair=acme_pair(config) if config.get("acme", "directory_url") else "")


def acme_pair(config):
    """The file the ACME client keeps its key and certificate chain in."""
    return config.data_path("acme", "pair.pem")


def acme(config):
    """The ACME client's settings, or C{None} without C{[acme] directory_url}; it needs C{[listen] http}."""
    if not config.get("acme", "directory_url"):
        return None
    if not config.get("listen", "http"):
        raise ConfigError("acme", "directory_url", "needs [listen] http, where the CA fetches its HTTP-01 challenges")
    if not config.get("acme", "domains"):
        raise ConfigError("acme", "domains", "needs at least one domain to order a certificate for")
    return acmeclient.AcmeSettings(
        directory_url=config.get("acme", "directory_url"), email=config.get("acme", "email"),
        domains=config.get("acme", "domains"), account_key=config.data_path("acme", "account.key"),
        pair=acme_pair(config), ca_file=config.get("acme", "ca_file"),
        renew_before=config.get("acme", "renew_before_days") * 86400.0)


def tls_options(config):
    """
    The listeners' L{ServerIdentity}, generating a self-signed pair for
    C{[server] hostname} if need be.
    """
    try:
        return ServerIdentity(tls_identity(config))
    except tls.CertificateError as e:
        where = ("acme", None) if e.key == "acme" else ("tls", e.key)
        raise ConfigError(*where, str(e)) from None


def smarthost_trust(config):
    """
    What providers' certificates must chain to: C{[smarthost] ca_file}
    (PEM) when set, else the platform's trust store.
    """
    path = config.get("smarthost", "ca_file")
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())
    except (OSError, ValueError, crypto.Error) as e:
        raise ConfigError("smarthost", "ca_file", "cannot load %s: %s" % (path, e)) from None


def _filter(config, key):
    template = config.get("realm", key)
    if "%s" not in template:
        raise ConfigError("realm", key, "the filter must contain %%s for the looked-up value: %r" % (template,))
    try:
        parse_filter(ldapsettings.fill(template, "x"), None, True, True, None, False)
    except LDAPInvalidFilterError:
        raise ConfigError("realm", key, "not a valid LDAP filter: %r" % (template,)) from None
    return template


def _attributes(text):
    attributes = dict(ldapsettings.ATTRIBUTE_DEFAULTS)
    for word in text.split():
        field, sep, attribute = word.partition("=")
        if not sep or not attribute:
            raise ConfigError("realm", "ldap_attributes", "expected FIELD=ATTRIBUTE, not %r" % (word,))
        if field not in ldapsettings.ATTRIBUTE_DEFAULTS:
            raise ConfigError(
                "realm",
                "ldap_attributes",
                "unknown field %r (fields: %s)" % (field, ", ".join(ldapsettings.ATTRIBUTE_DEFAULTS)),
            )
        attributes[field] = attribute
    return attributes


def _password(path):
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as e:
        raise ConfigError("realm", "bind_password_file", "cannot read %s: %s" % (path, e.strerror)) from None


def _positive(config, key):
    value = config.get("realm", key)
    if value <= 0:
        raise ConfigError("realm", key, "must be a positive number, not %d" % (value,))
    return value


def ldap(config):
    """@raise ConfigError: naming the first key that cannot work."""
    urls = config.get("realm", "ldap_url")
    if not urls:
        raise ConfigError("realm", "ldap_url", "needs at least one ldap:// or ldaps:// URL")
    for url in urls:
        if not url.lower().startswith(("ldap://", "ldaps://")):
            raise ConfigError("realm", "ldap_url", "expected ldap://HOST:PORT or ldaps://HOST:PORT, not %r" % (url,))
    base = config.get("realm", "base_dn")
    bases = {}
    for kind in ("mailbox", "domain", "account"):
        key = "ldap_%s_base" % (kind,)
        bases[kind] = config.get("realm", key) or base
        if not bases[kind]:
            raise ConfigError("realm", key, "no search base: set base_dn or %s" % (key,))
    return ldapsettings.LdapSettings(
        urls=urls,
        bind_dn=config.get("realm", "bind_dn"),
        bind_password=_password(config.get("realm", "bind_password_file")),
        mailbox_base=bases["mailbox"],
        domain_base=bases["domain"],
        account_base=bases["account"],
        mailbox_filter=_filter(config, "ldap_mailbox_filter"),
        domain_filter=_filter(config, "ldap_domain_filter"),
        account_filter=_filter(config, "ldap_account_filter"),
        attributes=_attributes(config.get("realm", "ldap_attributes")),
        auth=config.get("realm", "ldap_auth"),
        timeout=_positive(config, "ldap_timeout"),
        pool_size=_positive(config, "ldap_pool_size"),
        ca_file=config.get("realm", "ldap_ca_file"),
    )
