"""
Sending limits: which caps are in force for a message, and whether the
counts so far leave room for one more.

Pure functions of (facts, counts, now).  The caps come from the plan
table (L{trekmail.plans.sending_caps}) read afresh for every message, so an
upgrade applies at once and never resets the counters.  Time windows:

  - daily caps count messages since 00:00 UTC (docs/sending-rules.md, "Why mail is not sending" check 4);
  - the hourly cap is a rolling 60 minutes, counted per second of
    submission so that a message stops counting exactly an hour later;
  - warmup (docs/sending-rules.md, "Warmup"): a domain in its days 1-3 gets 40 %
    of the daily caps, days 4-7 70 %, from day 8 the full caps.  Day 1 is
    the first 24 hours after C{domain.created}.  Warmup protects the shared
    managed IP pool, so it applies on the managed route only; a BYO
    provider keeps its own reputation.

A message counts once, whatever its number of recipients.
"""

import dataclasses
from dataclasses import dataclass

from trekmail.plans import plan_named, sending_caps
from trekmail.policy.gate import Denial
from trekmail.realm import routes

DAY = 86400
HOUR = 3600

DAILY = "daily"
HOURLY = "hourly"
RECIPIENTS = "recipients"


@dataclass(frozen=True)
class Counts:
    mailbox_day: int
    account_day: int
    account_hour: int


def day_number(now):
    """The UTC day C{now} falls in, as days since the epoch."""
    return int(now // DAY)


def next_midnight(now):
    return (day_number(now) + 1) * DAY


def warmup_percent(domain, now):
    age_days = int((now - domain.created) // DAY) + 1
    if age_days <= 3:
        return 40
    if age_days <= 7:
        return 70
    return 100


def _scaled(cap, percent):
    return None if cap is None else max(1, cap * percent // 100)


def caps_for(context, now):
    """The L{SendingCaps} in force for a message from C{context}'s mailbox at C{now}."""
    account = context.account
    route = routes.resolve_route(context.domain, account)
    caps = sending_caps(plan_named(account.plan), route.managed, account.paid)
    if not route.managed:
        return caps
    percent = warmup_percent(context.domain, now)
    if percent == 100:
        return caps
    return dataclasses.replace(
        caps,
        per_mailbox_day=_scaled(caps.per_mailbox_day, percent),
        per_account_day=_scaled(caps.per_account_day, percent),
    )


def _full(count, cap):
    return cap is not None and count >= cap


def over_limit(caps, counts):
    """
    Why one more message would break a cap, or C{None}.  Daily caps are
    reported before the hourly one: they last longer, so naming them tells
    the user the real wait.
    """
    if _full(counts.mailbox_day, caps.per_mailbox_day):
        return Denial(
            DAILY,
            "user has exceeded sending quota: this mailbox may send %d messages a day;"
            " the count resets at 00:00 UTC (upgrade the plan for more)" % (caps.per_mailbox_day,),
        )
    if _full(counts.account_day, caps.per_account_day):
        return Denial(
            DAILY,
            "user has exceeded sending quota: this account may send %d messages a day;"
            " the count resets at 00:00 UTC (upgrade the plan for more)" % (caps.per_account_day,),
        )
    if _full(counts.account_hour, caps.per_account_hour):
        return Denial(
            HOURLY,
            "temporarily blocked: this account may send %d messages an hour;"
            " wait a few minutes and sends resume" % (caps.per_account_hour,),
        )
    return None


def recipients_denial(caps, count):
    """docs/sending-rules.md, "Why mail is not sending" check 5: too many recipients refuses the whole message."""
    if count <= caps.recipients_per_message:
        return None
    return Denial(
        RECIPIENTS,
        "too many recipients: this plan allows %d per message and the whole message is refused;"
        " split it into batches of %d or fewer" % (caps.recipients_per_message, caps.recipients_per_message),
    )
