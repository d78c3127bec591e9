"""
The LDAP backend's settings (read from C{[realm]} and checked once at
start-up by L{trekmail.settings}, so that a filter with a missing
parenthesis or a misspelt field in C{ldap_attributes} stops the server
with a line naming the key rather than failing every login later).

Filters are templates in which C{%s} stands for the looked-up value (an
address, a domain name, an account number), as in Postfix's LDAP tables.
The value is always escaped (RFC 4515) before it is put in, never the
template: an operator may write any filter, a client can write none.
"""

from dataclasses import dataclass

from ldap3.utils.conv import escape_filter_chars

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
