"""
The plan table of docs/sending-rules.md, kept as data.

Every cap the product enforces is read from here so that a change of
pricing is a change of one table, not a hunt through the protocol code.
Its sections "Plans and limits" (sending limits, recipients per message,
IMAP connections) and "Trial and verification" (trial limits, eligibility).
"""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class SendingCaps:
    """
    Caps on outbound mail; C{None} means "no cap of ours" (a BYO provider
    sets its own limits, docs/sending-rules.md "Limits by route").
    """

    per_mailbox_day: Optional[int]
    per_account_day: Optional[int]
    per_account_hour: Optional[int]
    recipients_per_message: int


@dataclass(frozen=True)
class Plan:
    name: str
    managed_sending: bool
    managed: SendingCaps
    byo: SendingCaps
    imap_per_ip: int
    imap_total: int


def _paid(name, mailbox_day, account_day, account_hour, recipients, per_ip, total):
    return Plan(
        name=name,
        managed_sending=True,
        managed=SendingCaps(mailbox_day, account_day, account_hour, recipients),
        byo=SendingCaps(None, None, None, recipients),
        imap_per_ip=per_ip,
        imap_total=total,
    )


_NANO_ROW = SendingCaps(200, 400, 50, 50)

PLANS = {
    "nano": Plan(
        name="nano",
        managed_sending=False,
        managed=_NANO_ROW,
        byo=_NANO_ROW,
        imap_per_ip=10,
        imap_total=15,
    ),
    "starter": _paid("starter", 1000, 6000, 500, 100, 25, 40),
    "pro": _paid("pro", 2000, 15000, 1500, 250, 50, 80),
    "agency": _paid("agency", 2500, 40000, 3000, 500, 100, 150),
}

TRIAL_CAPS = SendingCaps(
    per_mailbox_day=30, per_account_day=50, per_account_hour=15, recipients_per_message=10
)
"""docs/sending-rules.md, "Trial and verification": never-paid accounts on the managed route, until a first payment clears."""

PLAN_NAMES = tuple(PLANS)


class UnknownPlan(ValueError):
    pass


def plan_named(name):
    try:
        return PLANS[name.lower()]
    except KeyError:
        raise UnknownPlan(
            "unknown plan %r (choose one of: %s)" % (name, ", ".join(PLAN_NAMES))
        ) from None


def sending_caps(plan, route_is_managed, paid):
    """
    The caps in force for one message: the managed route follows the plan
    (or the trial caps while the account has never paid); a profile route
    follows the plan's BYO row, whose recipient cap always applies.
    """
    if not route_is_managed:
        return plan.byo
    if not paid:
        return TRIAL_CAPS
    return plan.managed
