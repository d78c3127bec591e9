"""
The operator's verbs on the queue and the suppression list (C{trekmail
queue ...}, C{trekmail suppression ...}).

They work on the spool files and the database directly, so they need no
running server; a running server picks up a deletion or a flush request
within L{trekmail.queue.manager.CONTROL_SECONDS} seconds.  A message still
in the accept log is deleted by naming it in its segment's deletion list
(L{trekmail.queue.acceptlog}); the server leaves it out when the segment
is moved into files.
"""

import datetime
import os
import re

from trekmail.queue import acceptlog, suppression
from trekmail.queue.manager import CONTROL_SECONDS
from trekmail.queue.spoolformat import SpoolLayout, TornEntry, decode, read_envelope
from trekmail.realm.errors import InvalidInput, NotFound

_QUEUE_ID = re.compile(r"^[0-9a-f]{12,40}$")


def _layout(queue_dir):
    layout = SpoolLayout(queue_dir)
    layout.create()
    return layout


def _when(seconds):
    if not seconds:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def queue_list(queue_dir):
    layout = _layout(queue_dir)
    accepted = acceptlog.listed(layout.log)
    entries = []
    for queue_id in sorted(set(layout.file_ids()) | set(accepted)):
        try:
            if queue_id in accepted:
                envelope, size = decode(acceptlog.read_at(*accepted[queue_id]))[0], accepted[queue_id][2]
            else:
                path = layout.message_path(queue_id)
                envelope, size = read_envelope(path), os.path.getsize(path)
        except (TornEntry, OSError):
            continue
        state = layout.read_state(queue_id) or {}
        entries.append({
            "queue_id": queue_id,
            "sender": envelope.sender or "<>",
            "recipients": list(state.get("pending", envelope.recipients)),
            "origin": envelope.origin,
            "arrived": _when(envelope.received_at),
            "attempts": state.get("attempts", 0),
            "next_attempt": _when(state.get("next_at")),
            "last_error": "; ".join("%s: %s" % item for item in sorted(state.get("errors", {}).items())) or None,
            "size": size,
        })
    return entries


def queue_flush(queue_dir):
    _layout(queue_dir).request_flush()
    return "flush requested: the server retries every waiting message within %d seconds" % (CONTROL_SECONDS,)


def queue_delete(queue_dir, queue_id):
    queue_id = (queue_id or "").strip().lower()
    if not _QUEUE_ID.match(queue_id):
        raise InvalidInput("%r is not a queue id (see trekmail queue list)" % (queue_id,))
    layout = _layout(queue_dir)
    accepted = acceptlog.listed(layout.log)
    if queue_id not in accepted and not os.path.exists(layout.message_path(queue_id)):
        raise NotFound("no queued message %s" % (queue_id,))
    if queue_id in accepted:
        acceptlog.mark_deleted(layout.log, acceptlog.segment_of(accepted[queue_id][0]), [queue_id])
    layout.remove(queue_id)
    return "deleted %s" % (queue_id,)


def suppression_list(db, domain=None):
    return [
        {
            "domain": r.domain,
            "address": r.address,
            "hard_bounces": r.count,
            "suppressed_at": _when(r.suppressed_at),
            "last_bounce": r.last_diagnostic,
        }
        for r in suppression.suppressed(db, domain)
    ]


def suppression_remove(db, address, domain=None):
    address = (address or "").strip().lower()
    if "@" not in address:
        raise InvalidInput("%r is not an email address" % (address,))
    if not suppression.remove(db, address, domain):
        raise NotFound("%s is not on the suppression list" % (address,))
    return "removed %s: mail to it is tried again (a running server applies this within %d seconds)" % (
        address, suppression.REFRESH_SECONDS,
    )
