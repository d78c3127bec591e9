"""
Signed return paths: mail the managed relay sends leaves with MAIL FROM
C{bounce+QUEUEID-DAY-MAC@hostname}, one per recipient (VERP), so a
report that comes back can be tied to a message TrekMail sent and to the
one recipient it was sent to.  Anybody can send a null-sender
C{multipart/report} to our MX; only we can mint a return path that
verifies, so only reports to one are counted as hard bounces.

C{MAC} is HMAC-SHA256 over the queue id, the day (days since the epoch,
UTC), the envelope sender and the recipient, truncated to 80 bits and
written in lower-case base32: some MTAs lower-case local parts, and the
whole local part stays within RFC 5321's 64 octets.  The sender and
recipient are not written out (they would not fit): the report names
them (its C{Final-Recipient}, the returned C{From}), and the MAC says
whether it names the right ones.  A return path older than
L{MAX_AGE_DAYS} no longer verifies.

The HMAC key is derived (HKDF) from the secrets key file, kept outside the
database (L{trekmail.crypto.SecretKeyring}): every key in the file
verifies, so a rotation in progress loses nothing, but return paths
signed with a retired key stop verifying once the rotation finishes.
"""

import base64
import hmac
import re
from dataclasses import dataclass

LOCAL_PREFIX = "bounce+"
MAX_AGE_DAYS = 30
KEY_INFO = b"trekmail return path v1"
_MAC_BYTES = 10
_LOCAL = re.compile(r"bounce\+([0-9a-z]{1,24})-([0-9]{1,6})-([a-z2-7]{16})\Z")


@dataclass(frozen=True)
class ReturnPath:
    """A return path as written; L{ReturnPaths.verify} says whether it is ours."""

    queue_id: str
    day: int
    mac: str


def _mac(key, queue_id, day, sender, recipient):
    signed = "\0".join((queue_id, str(day), sender.lower(), recipient.lower())).encode("utf-8")
    digest = hmac.new(key, signed, "sha256").digest()[:_MAC_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()


class ReturnPaths:
    """
    @param keys: a callable returning the HMAC keys, the one to sign with
        first (L{trekmail.crypto.SecretKeyring.derive} of L{KEY_INFO}).
    """

    def __init__(self, keys, hostname, clock):
        self._keys = keys
        self.hostname = hostname.lower()
        self._clock = clock

    def _today(self):
        return int(self._clock.seconds() // 86400)

    def address(self, queue_id, sender, recipient):
        """The MAIL FROM for C{recipient}'s copy of message C{queue_id} from C{sender}."""
        day = self._today()
        mac = _mac(self._keys()[0], queue_id.lower(), day, sender, recipient)
        return "%s%s-%d-%s@%s" % (LOCAL_PREFIX, queue_id.lower(), day, mac, self.hostname)

    def parse(self, address):
        """
        The L{ReturnPath} C{address} is written as, if it is one of ours
        and not expired; C{None} otherwise.  This is all the MX can check
        at RCPT: the MAC needs the report.
        """
        local, _, domain = address.lower().rpartition("@")
        found = _LOCAL.match(local)
        if domain != self.hostname or found is None:
            return None
        day = int(found.group(2))
        if not 0 <= self._today() - day <= MAX_AGE_DAYS:
            return None
        return ReturnPath(found.group(1), day, found.group(3))

    def verify(self, path, sender, recipient):
        """Whether C{path} was signed for C{recipient}'s copy of a message from C{sender}."""
        return any(
            hmac.compare_digest(path.mac, _mac(key, path.queue_id, path.day, sender, recipient))
            for key in self._keys()
        )
