"""
What the realm needs from the configuration, as values: built by the
wiring (L{trekmail.settings}), so the realm's verbs and its directory
never see the L{trekmail.config.Config}.
"""

from dataclasses import dataclass
from typing import Optional

from trekmail.realm.dkimselectors import DkimSettings
from trekmail.realm.ldapsettings import LdapSettings


@dataclass(frozen=True)
class ClientPorts:
    """
    The ports mail clients reach this server on, C{None} for a service it
    does not offer: what SRV records (RFC 6186, RFC 6764) and client
    autoconfiguration announce.
    """

    submissions: Optional[int] = None
    submission: Optional[int] = None
    imaps: Optional[int] = None
    imap: Optional[int] = None
    https: Optional[int] = None


@dataclass(frozen=True)
class PublishedNames:
    """The names a customer's domain publishes pointing at this platform (docs/sending-rules.md)."""

    hostname: str
    """C{[server] hostname}: the MX target."""
    spf_include: str
    dmarc_record: str
    ports: ClientPorts = ClientPorts()


@dataclass(frozen=True)
class RealmSettings:
    data_dir: str
    """Where the DKIM keys are kept (L{trekmail.realm.dkimkeys})."""
    published: PublishedNames
    scrypt_n: int
    ldap: Optional[LdapSettings] = None
    """With C{[realm] backend = ldap}: the directory owns accounts, domains and mailboxes."""
    dkim: DkimSettings = DkimSettings()
    """C{[dkim]}: key rotation, CNAME mode, Ed25519 (docs/dkim.md)."""
