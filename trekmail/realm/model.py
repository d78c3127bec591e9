"""
The realm's facts as immutable values, shared by the sqlite store and the
LDAP directory so that protocol and policy code never care which backend
answered.
"""

import datetime
from dataclasses import dataclass
from typing import Optional

SUSPENSION_REASONS = ("billing", "deliverability", "abuse")

VERIFICATION_ENFORCED_FROM = datetime.date(2026, 2, 19)
"""docs/sending-rules.md, "Trial and verification": accounts registered on or after this date must verify."""


@dataclass(frozen=True)
class Account:
    id: int
    owner_email: str
    owner_verified: bool
    registered: datetime.date
    plan: str
    paid: bool
    suspension: Optional[str]
    default_route: Optional[str] = None


@dataclass(frozen=True)
class Domain:
    name: str
    account_id: int
    created: float
    """Seconds since the epoch (UTC); warmup counts days from here."""
    dkim_selector: str
    dkim_public_key: str
    """Base64 DER SubjectPublicKeyInfo, as published in the p= tag."""
    dns_status: str = "pending"
    route: Optional[str] = None
    catchall: Optional[str] = None
    """The mailbox that gets mail for addresses of the domain nothing else matches, or C{None}."""
    dkim_ed25519_selector: Optional[str] = None
    """The active Ed25519 selector (RFC 8463), signing beside the RSA one, or C{None}."""


@dataclass(frozen=True)
class Mailbox:
    address: str
    domain: str
    password_hash: str
    paused: bool


@dataclass(frozen=True)
class MailboxContext:
    """A mailbox with its domain and account: what a login or a send needs."""

    mailbox: Mailbox
    domain: Domain
    account: Account

    @property
    def address(self):
        return self.mailbox.address


@dataclass(frozen=True)
class Alias:
    """An address of a hosted domain that delivers to mailboxes of the same account."""

    address: str
    domain: str
    targets: tuple
