"""
The contract between the front doors (submission, MX) and the durable
queue, kept small in the manner of maddy's delivery target: a door hands
over a whole, canonical message with its envelope and gets an answer only
once the queue holds it on disk.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

from zope.interface import Interface


@dataclass(frozen=True)
class Envelope:
    sender: str
    """The envelope sender; C{""} is the null sender of bounces."""
    recipients: Tuple[str, ...]
    origin: str
    """C{"submission"}, C{"mx"} or C{"report"}: who accepted it."""
    authenticated_as: Optional[str] = None
    received_at: float = 0.0
    client_address: str = ""
    extra: dict = field(default_factory=dict)


class SpoolError(Exception):
    """
    The message could not be made durable (disk full, I/O error): the door
    answers C{451 4.3.0} and the client keeps its copy.
    """


class IMessageQueue(Interface):
    def enqueue(envelope, message, trace=None):
        """
        Make C{message} (bytes, CRLF line ends, no dot-stuffing) and its
        L{Envelope} durable.

        @param trace: C{trace(queue_id)} gives the trace fields (bytes) to
            put in front of the message: a door's C{Received:} names the
            queue id (RFC 5321 section 4.4), which the queue assigns.

        @return: Deferred firing with the queue id once message and
            envelope are fsynced; failing with L{SpoolError} otherwise.
        """
