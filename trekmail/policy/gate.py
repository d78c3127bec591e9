"""
The sending gate: may this mailbox send at all, right now?

Pure functions of the realm's facts (a L{MailboxContext}) and the time, so
the submission server, C{doctor} and the tests all reach the same verdict.
The checks run in the order of docs/sending-rules.md, "Why mail is not sending"
restricted to those that depend on account state alone: 1 owner
verification, 3 Nano / no route, 6 paused mailbox, 7 suspension.  Limits
(checks 4 and 5) need counters and live in L{trekmail.policy.limits}; the
password (check 8) is the cred checker's.

A verdict is a L{Denial}: a kind the protocol maps to its reply code in one
place, and a text that tells the user what to do.
"""

import datetime
from dataclasses import dataclass

from trekmail.realm import routes
from trekmail.realm.model import VERIFICATION_ENFORCED_FROM

GRACE = datetime.timedelta(days=7)
"""docs/sending-rules.md, "Trial and verification": unverified owners may send for 7 days after registering."""

UNVERIFIED = "unverified"
NO_ROUTE = "no-route"
PAUSED = "paused"
SUSPENDED = "suspended"

SUSPENSION_TEXTS = {
    "billing": "There is a billing issue with your account. Please update payment details or contact support.",
    "deliverability": (
        "We've temporarily paused outbound mail because too many of your recent messages were"
        " rejected by recipient servers. This is usually a quick fix \N{EM DASH} please reach out"
        " to support and we'll help you get sending again."
    ),
    "abuse": "Your account is temporarily restricted. Please contact support for details.",
}
"""docs/sending-rules.md, "Why mail is not sending" check 7: the dashboard banner for each suspension reason."""


@dataclass(frozen=True)
class Denial:
    kind: str
    text: str


def grace_ends(account):
    """Seconds since the epoch when an unverified owner's grace runs out."""
    start = datetime.datetime.combine(account.registered, datetime.time(), datetime.timezone.utc)
    return (start + GRACE).timestamp()


def verification_denial(account, now):
    if account.owner_verified or account.registered < VERIFICATION_ENFORCED_FROM:
        return None
    if now < grace_ends(account):
        return None
    return Denial(
        UNVERIFIED,
        "Sending blocked \N{EM DASH} please verify your email: the account owner %s has not"
        " clicked the verification link and the 7-day grace period is over"
        " (resend it from the dashboard banner)" % (account.owner_email,),
    )


def route_denial(context):
    text = routes.refusal(routes.resolve_route(context.domain, context.account), context.account.plan)
    return None if text is None else Denial(NO_ROUTE, text)


def paused_denial(mailbox):
    if not mailbox.paused:
        return None
    return Denial(
        PAUSED,
        "mailbox %s is paused: the account owner can resume it on the mailbox page" % (mailbox.address,),
    )


def suspension_denial(account):
    if account.suspension is None:
        return None
    text = SUSPENSION_TEXTS.get(account.suspension, SUSPENSION_TEXTS["abuse"])
    return Denial(SUSPENDED, "account suspended: " + text)


def denial(context, now):
    """The first reason C{context}'s mailbox may not send at C{now}, or C{None}."""
    return (
        verification_denial(context.account, now)
        or route_denial(context)
        or paused_denial(context.mailbox)
        or suspension_denial(context.account)
    )
