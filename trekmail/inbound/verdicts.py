"""
One verdict per message arriving at the MX: SPF, DKIM, ARC and DMARC
run together in one call on worker threads (the libraries block on DNS),
and the L{Verdict} says what the MX does: deliver, deliver to Junk
(DMARC C{p=quarantine}) or refuse (C{p=reject}).  The verdict is the
seam a content filter's opinion joins later.
"""

from dataclasses import dataclass

import dkim

from trekmail.inbound import authresults, dkimcheck, dmarc, spf
from trekmail.inbound.lookups import Lookups

DELIVER = "deliver"
JUNK = "junk"
REJECT = "reject"


@dataclass(frozen=True)
class Verdict:
    action: str
    header: bytes
    """Our Authentication-Results field."""
    dmarc: dmarc.DMARCResult
    authserv_id: str

    def stamp(self, message):
        """C{message} with forged fields of our authserv-id removed and ours on top."""
        return self.header + authresults.without_ours(message, self.authserv_id)


@dataclass(frozen=True)
class AuthSettings:
    authserv_id: str
    """The C{[server] hostname}."""
    nameservers: tuple
    dmarc_reject: bool = True
    """C{[mx] dmarc_reject}: refuse C{p=reject} failures, or file them in Junk."""


def _arc(lookups, message):
    try:
        state, _, _ = dkim.arc_verify(message, dnsfunc=dkimcheck.dnsfunc(lookups))
    except dkim.DKIMException:
        return "permerror"
    return state.decode("ascii") if isinstance(state, bytes) else str(state)


class Authenticator:
    def __init__(self, settings, workers):
        self._settings = settings
        self._workers = workers
        self._lookups = Lookups(settings.nameservers)

    def check(self, client_ip, sender, helo, message):
        """Deferred firing with the L{Verdict}, computed on the worker threads."""
        return self._workers.run(self.verdict, client_ip, sender, helo, message)

    def verdict(self, client_ip, sender, helo, message):
        """Blocking: everything one message needs, in one call."""
        lookups = self._lookups
        mailfrom, helo_result = spf.check(lookups, client_ip, sender, helo)
        signatures = dkimcheck.check(lookups, message)
        arc = _arc(lookups, message)
        result = dmarc.check(lookups, message, mailfrom, signatures)
        header = authresults.field(self._settings.authserv_id, mailfrom, helo_result, signatures, result, arc)
        action = DELIVER
        if result.result == "fail" and result.policy == "reject":
            action = REJECT if self._settings.dmarc_reject else JUNK
        elif result.result == "fail" and result.policy == "quarantine":
            action = JUNK
        return Verdict(action, header, result, self._settings.authserv_id)
