"""
What the queue asks of a route: hand over one signed message and learn
what became of each recipient.  The managed MX relay implements it, and so
does smarthost delivery through a customer's provider profile, so the
queue's per-message route decision is a lookup, not a branch.
"""

from zope.interface import Interface


class ITransport(Interface):
    def deliver(sender, recipients, message, sending_domain=None):
        """
        Send C{message} (bytes in wire form, already DKIM-signed) from
        C{sender} (C{""} for a report) to C{recipients}.

        @param sending_domain: the hosted L{trekmail.realm.model.Domain}
            the message comes from, or C{None}; the managed relay picks its
            source pool by its age.
        @return: Deferred firing with one
            L{trekmail.relay.client.Outcome} per recipient.  It does not
            fail: a problem reaching the server is a temporary outcome.
        """
