"""
Which mailboxes an address of a hosted domain delivers to when it is not
a mailbox itself (docs/addressing.md): its alias; then, with the
subaddress cut off (C{alice+tag@} -> C{alice@}, RFC 5233), that mailbox
or alias; last, the domain's catch-all.  The catch-all is asked for
apart (L{Recipients.catch_all}) so a door can put its own fallbacks
(the MX's postmaster) before it.

Only L{IDirectory} questions are asked, so every backend gets the same
rules; a backend without aliases simply answers none.
"""

from twisted.internet import defer


def untagged(address, delimiters):
    """
    C{address} with its subaddress removed: the local part is cut at the
    first of the C{delimiters} characters (as Postfix's
    C{recipient_delimiter}), or C{None} when there is nothing to cut.  A
    delimiter that starts the local part is not one (C{+info@} stays).
    """
    local, at, domain = address.rpartition("@")
    cuts = [i for i in (local.find(d) for d in delimiters) if i > 0]
    if not at or not cuts:
        return None
    return local[:min(cuts)] + "@" + domain


class Recipients:
    """
    @param directory: an L{IDirectory}.
    @param delimiters: the subaddress delimiter characters; empty turns
        plus-addressing off.
    """

    def __init__(self, directory, delimiters="+"):
        self.directory = directory
        self.delimiters = delimiters

    @defer.inlineCallbacks
    def named(self, address):
        """
        The mailboxes C{address} (lowercase, of a hosted domain, and no
        mailbox) names by alias or subaddress, or C{None}.
        """
        found = yield self.directory.alias(address)
        if found:
            return tuple(found)
        base = untagged(address, self.delimiters)
        if base is None:
            return None
        if (yield self.directory.mailbox(base)) is not None:
            return (base,)
        found = yield self.directory.alias(base)
        return tuple(found) if found else None

    @defer.inlineCallbacks
    def catch_all(self, domain):
        """C{(mailbox,)} for the L{Domain}'s catch-all while that mailbox exists, or C{None}."""
        if not domain.catchall:
            return None
        if (yield self.directory.mailbox(domain.catchall)) is None:
            return None
        return (domain.catchall.lower(),)
