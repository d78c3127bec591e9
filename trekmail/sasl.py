"""
The SASL PLAIN message (RFC 4616), read once for SMTP AUTH and IMAP
AUTHENTICATE alike: C{[authzid] NUL authcid NUL passwd}.

A mailbox may act only as itself, so an authorization identity other
than the login is refused (L{AuthorizationRefused}) instead of being
ignored: a client asking to act as someone else must learn that it was
not let, rather than believe it was.  An empty authzid, or one naming
the same mailbox as the login, is the login itself.
"""

from twisted.cred.credentials import UsernamePassword
from twisted.mail.interfaces import IChallengeResponse
from zope.interface import implementer

from trekmail.realm.checkers import normalise_address


class MalformedPlain(ValueError):
    """Not three fields separated by NUL."""


class AuthorizationRefused(Exception):
    """The authzid names someone other than the authcid."""


def plain(message):
    """
    C{message} (the decoded bytes) -> C{(authcid, passwd)} as bytes.

    @raise MalformedPlain: not C{authzid NUL authcid NUL passwd}.
    @raise AuthorizationRefused: a non-empty authzid other than the authcid.
    """
    fields = message.split(b"\0")
    if len(fields) != 3:
        raise MalformedPlain("SASL PLAIN needs authzid, authcid and passwd separated by NUL")
    authzid, authcid, password = fields
    if authzid and not _same_mailbox(authzid, authcid):
        raise AuthorizationRefused()
    return authcid, password


def _same_mailbox(authzid, authcid):
    """Equal, or one mailbox address written two ways (C{Alice@Example.com}, C{alice@example.com})."""
    if authzid == authcid:
        return True
    address = normalise_address(authzid)
    return address is not None and address == normalise_address(authcid)


@implementer(IChallengeResponse)
class PlainCredentials(UsernamePassword):
    """The PLAIN challenger of SMTP AUTH (Twisted's ignores the authzid), read by L{plain}."""

    def __init__(self):
        super().__init__(None, None)

    def getChallenge(self):
        return b""

    def setResponse(self, response):
        self.username, self.password = plain(response)

    def moreChallenges(self):
        return False
