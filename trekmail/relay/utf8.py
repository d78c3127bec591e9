"""
SMTPUTF8 on the way out (RFC 6531 section 3.2): what a message needs of
the next hop, and what becomes of it when the next hop does not offer it.

Envelope domains are kept as A-labels (L{trekmail.idn}), so they go to
every server as they are, which is what section 3.2 asks for a server
without SMTPUTF8.  A local part has no ASCII form: a recipient whose local
part is UTF-8 cannot be sent to such a server and fails for good with
C{553 5.6.7}, which the queue reports in its DSN; the other recipients of
the message still go.  A UTF-8 sender fails the whole message the same
way.  A message whose only UTF-8 is in its header goes with
C{SMTPUTF8} where that is offered and, like Postfix with its default
C{smtputf8_autodetect_classes}, as it is (with C{BODY=8BITMIME}) where it
is not: refusing it would bounce mail that reaches its reader today.
"""

from trekmail.delivery import outcomes

NOT_DOWNGRADABLE = 553
NOT_DOWNGRADABLE_TEXT = ("5.6.7 the %s address has a non-ASCII local part and %s does not offer SMTPUTF8"
                         " (RFC 6531 section 3.2): the address has no ASCII form to send it in")


def needs_smtputf8(job):
    """Whether C{job}'s MAIL should say SMTPUTF8: a UTF-8 address, or UTF-8 in the header."""
    if not job.sender.isascii() or not all(r.isascii() for r in job.recipients):
        return True
    end = job.message.find(b"\r\n\r\n")
    return not (job.message if end < 0 else job.message[:end]).isascii()


def refused(job):
    """The recipients of C{job} that cannot go to a server without SMTPUTF8 (all of them for a UTF-8 sender)."""
    if not job.sender.isascii():
        return job.recipients
    return tuple(r for r in job.recipients if not r.isascii())


def refusals(recipients, sender, remote):
    """The permanent L{trekmail.delivery.Outcome} of each of C{recipients} that could not be downgraded."""
    whose = "recipient's" if sender.isascii() else "sender's"
    return outcomes(recipients, NOT_DOWNGRADABLE, NOT_DOWNGRADABLE_TEXT % (whose, remote or "the next server"), remote)
