"""
The LDAP backend's settings, read from C{[realm]} and checked once at
start-up, so that a filter with a missing parenthesis or a misspelt field
in C{ldap_attributes} stops the server with a line naming the key rather
than failing every login later.

Filters are templates in which C{%s} stands for the looked-up value (an
address, a domain name, an account number), as in Postfix's LDAP tables.
The value is always escaped (RFC 4515) before it is put in, never the
template: an operator may write any filter, a client can write none.
"""

from dataclasses import dataclass

from ldap3.core.exceptions import LDAPInvalidFilterError
from ldap3.operation.search import parse_filter
from ldap3.utils.conv import escape_filter_chars

from trekmail.config import ConfigError

ATTRIBUTE_DEFAULTS = {
    "password": "userPassword",
    "paused": "trekmailPaused",
    "account": "trekmailAccountId",
    "domain": "associatedDomain",
    "owner": "mail",
    "owner_verified": "trekmailOwnerVerified",
    "registered": "trekmailRegistered",
    "plan": "trekmailPlan",
    "paid": "trekmailPaid",
    "suspension": "trekmailSuspension",
}
"""
Field -> attribute of the shipped schema (etc/ldap/trekmail-schema.ldif).
C{password} and C{paused} are read from mailbox entries, C{account} (the
account number) and C{domain} (its names, for C{trekmail directory sync})
from domain entries, the rest from account entries.
"""


@dataclass(frozen=True)
class LdapSettings:
    urls: tuple
    bind_dn: str
    bind_password: str
    mailbox_base: str
    domain_base: str
    account_base: str
    mailbox_filter: str
    domain_filter: str
    account_filter: str
    attributes: dict
    auth: str
    """C{"bind"}: log in by binding as the mailbox's entry; C{"compare"}: verify userPassword here."""
    timeout: int
    pool_size: int
    ca_file: str


def fill(template, value):
    """The filter C{template} with every C{%s} replaced by C{value}, escaped."""
    return template.replace("%s", escape_filter_chars(str(value)))


def _filter(config, key):
    template = config.get("realm", key)
    if "%s" not in template:
        raise ConfigError("realm", key, "the filter must contain %%s for the looked-up value: %r" % (template,))
    try:
        parse_filter(fill(template, "x"), None, True, True, None, False)
    except LDAPInvalidFilterError:
        raise ConfigError("realm", key, "not a valid LDAP filter: %r" % (template,)) from None
    return template


def _attributes(text):
    attributes = dict(ATTRIBUTE_DEFAULTS)
    for word in text.split():
        field, sep, attribute = word.partition("=")
        if not sep or not attribute:
            raise ConfigError("realm", "ldap_attributes", "expected FIELD=ATTRIBUTE, not %r" % (word,))
        if field not in ATTRIBUTE_DEFAULTS:
            raise ConfigError(
                "realm",
                "ldap_attributes",
                "unknown field %r (fields: %s)" % (field, ", ".join(ATTRIBUTE_DEFAULTS)),
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


def from_config(config):
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
    return LdapSettings(
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
