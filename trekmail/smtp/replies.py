"""
Every reply code the SMTP doors give for a policy verdict or a failure
below them, in two tables and nowhere else: a change of code is one line
here, and submission and the MX cannot drift apart.

L{REPLIES} maps a policy denial's kind to its code and enhanced status.
L{FAILURES} maps what failed (the step, and the class of the error) to
the whole reply; L{failed} looks an error up by its class's ancestry, so
an entry for C{Exception} is the step's answer to the unforeseen, which
is also logged with its traceback (the foreseen ones are already logged
where they happened: the directory and the spool say what went wrong).

A reply that refuses the client on policy carries a C{reason}: a short
word (the denial's kind for L{REPLIES}) that the session logs in a
C{refused} event of the mail log, and the metrics count.
"""

from twisted.python.failure import Failure

from trekmail.policy import gate, limits, sender
from trekmail.queue.interface import SpoolError
from trekmail.realm.errors import DirectoryUnavailable


class Reply(Exception):
    """A complete reply; raised or returned by the hooks.  C{reason}: why it refuses, when it is a refusal."""

    def __init__(self, code, status, text, reason=None):
        super().__init__(code, status, text)
        self.code = code
        self.status = status
        self.text = text
        self.reason = reason


REPLIES = {
    gate.UNVERIFIED: (554, "5.7.7"),
    gate.NO_ROUTE: (554, "5.7.7"),
    gate.PAUSED: (554, "5.7.7"),
    gate.SUSPENDED: (554, "5.7.7"),
    sender.ENVELOPE: (550, "5.7.1"),
    sender.HEADER: (550, "5.7.1"),
    limits.DAILY: (451, "4.7.1"),
    limits.HOURLY: (421, "4.7.0"),
    limits.RECIPIENTS: (550, "5.5.3"),
}

_AUTH_TEMPORARY = (454, "4.7.0", "temporary authentication failure, try again later")
_NOT_STORED = (451, "4.3.0", "could not store the message, please try again")

FAILURES = {
    # RFC 4954 6: a login the server could not check is 454 4.7.0.
    ("login", DirectoryUnavailable): _AUTH_TEMPORARY,
    ("login", Exception): _AUTH_TEMPORARY,
    # RFC 3463 4.4.3: the directory is a server we could not reach.
    ("sender", DirectoryUnavailable): (451, "4.4.3", "account directory unavailable, try again later"),
    ("recipient", DirectoryUnavailable): (451, "4.4.3", "directory unavailable, try again later"),
    # The message is not on disk: the client keeps its copy and retries.
    ("enqueue", SpoolError): _NOT_STORED,
    ("enqueue", Exception): _NOT_STORED,
    ("authentication", Exception): (451, "4.3.0", "could not check the message's authentication, please try again"),
    ("command", Exception): (451, "4.3.0", "local error in processing, please try again"),
}


def refuse(denial):
    """The reply to a policy denial."""
    code, status = REPLIES[denial.kind]
    return Reply(code, status, denial.text, reason=denial.kind)


def failed(step, error, log, door):
    """
    The reply to C{error} (an exception or a L{Failure}) at C{step} of a
    C{door}'s session.  An error the step has no entry for is a bug at the
    call site: it was caught where it should have gone on up.
    """
    failure = error if isinstance(error, Failure) else Failure(error)
    for cls in type(failure.value).__mro__:
        reply = FAILURES.get((step, cls))
        if reply is not None:
            break
    else:
        raise KeyError("no reply for %r at %s" % (failure.value, step))
    if cls is Exception:
        log.failure("{door} {step} failed", failure, door=door, step=step)
    else:
        log.warn("{door} {step}: {error}", door=door, step=step, error=failure.getErrorMessage())
    return Reply(*reply)
