"""
How a domain sends (docs/sending-rules.md, "Routes"): managed, through a saved SMTP profile, or
not configured yet.  L{resolve_route} is the one rule for it, a pure
function so that the submission gate, the queue and C{doctor} can never
disagree about where a message goes.

Stored values: C{domains.route} and C{accounts.default_route} hold
C{"managed"}, C{"profile:ID"} or NULL (not set).  Profile deletion
rewrites every value that names the profile in the same transaction, so a
route naming a missing profile cannot exist.
"""

from dataclasses import dataclass
from typing import Optional

from trekmail.plans import plan_named
from trekmail.realm.errors import InvalidInput

MANAGED = "managed"
PROFILE = "profile"
UNCONFIGURED = "unconfigured"


@dataclass(frozen=True)
class Route:
    kind: str
    """L{MANAGED}, L{PROFILE} or L{UNCONFIGURED}."""
    profile_id: Optional[int] = None

    @property
    def managed(self):
        return self.kind == MANAGED

    @property
    def text(self):
        """The stored form; C{None} for unconfigured."""
        if self.kind == PROFILE:
            return "%s:%d" % (PROFILE, self.profile_id)
        return MANAGED if self.kind == MANAGED else None

    def __str__(self):
        return self.text or UNCONFIGURED


MANAGED_ROUTE = Route(MANAGED)
UNCONFIGURED_ROUTE = Route(UNCONFIGURED)


def parse_route(text):
    """C{"managed"} or C{"profile:7"} -> L{Route}; C{None} -> C{None} (not set)."""
    if text is None:
        return None
    text = text.strip().lower()
    if text == MANAGED:
        return MANAGED_ROUTE
    kind, _, number = text.partition(":")
    if kind == PROFILE and number.isdigit() and int(number) > 0:
        return Route(PROFILE, int(number))
    raise InvalidInput("%r is not a route (expected managed or profile:ID)" % (text,))


def plan_baseline(plan_name):
    """docs/sending-rules.md, "Routes": with no default set, paid plans start managed and Nano unconfigured."""
    return MANAGED_ROUTE if plan_named(plan_name).managed_sending else UNCONFIGURED_ROUTE


def resolve_route(domain, account):
    """
    The route in force for mail from C{domain} (a L{Domain} of C{account}):
    the domain's own route, else the account default, else the plan
    baseline.
    """
    for text in (domain.route, account.default_route):
        route = parse_route(text)
        if route is not None:
            return route
    return plan_baseline(account.plan)


def refusal(route, plan_name):
    """
    Why mail on C{route} cannot leave at all, as the text of a C{554 5.7.7}
    reply, or C{None} when the route can carry mail.
    """
    if route.kind == UNCONFIGURED:
        return (
            "no sending route is configured for this domain: pick one with"
            " `trekmail smtp route DOMAIN managed|profile:ID` (the Nano plan needs an SMTP profile)"
        )
    if route.managed and not plan_named(plan_name).managed_sending:
        return (
            "outbound mail is paused: the Nano plan does not include managed sending;"
            " add an SMTP profile (`trekmail smtp profile add`) or upgrade the plan"
        )
    return None
