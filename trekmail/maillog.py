"""
The mail log: one twisted.logger event per step of every message and per
login, for the operator to grep and for L{trekmail.cli}'s C{log trace}.

Each event carries C{log_trekmail} (one of the kinds below) and plain
fields for observers (the metrics read the same events), and its format
is the one line that lands in C{twistd.log}, Postfix-like: the queue id
first when there is one, then C{key=value} pairs::

    0190f3c2a1b5e3c9d20f: accepted from=<a@example.com> client=pc.example[192.0.2.1] user=a@example.com
        size=1234 nrcpt=1 msgid=<x@example.com> listener=submission
    0190f3c2a1b5e3c9d20f: to=<b@example.net> route=managed relay=mx.example.net[198.51.100.7]
        source=203.0.113.5 tls=TLSv1.3 verified=no delay=1.2 outcome=delivered reply="250 2.0.0 ok"
    0190f3c2a1b5e3c9d20f: stored mailbox=<b@example.com> folder=INBOX
    0190f3c2a1b5e3c9d20f: report kind=failure notify=<a@example.com> id=0190f3c2a1b6...
    login imap alice@example.com [192.0.2.1] ok
    refused smtp mx [192.0.2.1] "550 5.7.1" recipient
    refused smtp mx [192.0.2.1] "421 4.7.0" connections suppressed=212 in=60s

(each on one line).  Every value is reduced to printable ASCII without
spaces (the quoted reply keeps its spaces, with C{"} and C{\\} escaped),
so a client's HELO or a server's reply cannot start a line of its own or
fake a field.  No password is ever a field: logins name the mailbox.
"""

import datetime
import os
import re

from twisted.cred.error import UnauthorizedLogin

from trekmail.policy.logins import Busy, Throttled

ACCEPTED = "accepted"
DELIVERY = "delivery"
LOCAL_DELIVERY = "local_delivery"
REPORT = "report"
LOGIN = "login"
REFUSED = "refused"
REFUSALS_SUPPRESSED = "refusals_suppressed"

DELIVERED, DEFERRED, BOUNCED, SUPPRESSED, HELD = "delivered", "deferred", "bounced", "suppressed", "held"
OK, FAILED, THROTTLED, BUSY, UNAVAILABLE = "ok", "failed", "throttled", "busy", "unavailable"

MAX_VALUE = 200
MAX_REPLY = 400
MAX_HEADER_SCAN = 65536
"""How much of a message L{message_id} reads: the id is in the header, which is not longer in practice."""


def _word(value, limit=MAX_VALUE):
    """C{value} as one printable, space-free token; C{-} for nothing."""
    if value is None or value == "":
        return "-"
    text = str(value)[:limit]
    return "".join(c if "!" <= c <= "~" else "?" for c in text)


def _quoted(value):
    text = str(value or "")[:MAX_REPLY]
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"%s"' % (text.replace("\\", "\\\\").replace('"', '\\"'),)


def _address(value):
    """An envelope address for C{<...>}: the null sender stays C{<>}."""
    return _word(value) if value else ""


def _delay(value):
    return "-" if value is None else "%.1f" % (value,)


def _accepted(f):
    return "%s: accepted from=<%s> client=%s[%s] user=%s size=%s nrcpt=%s msgid=%s listener=%s" % (
        _word(f.get("queue_id")), _address(f.get("sender")), _word(f.get("client_name")), _word(f.get("client_address")),
        _word(f.get("user")), _word(f.get("size")), _word(f.get("recipients")), _word(f.get("message_id")),
        _word(f.get("listener")))


def _relay(f):
    if f.get("route") == "local" and not f.get("host"):
        return "local"
    return "%s[%s]" % (_word(f.get("host")), _word(f.get("address")))


def _delivery(f):
    return "%s: to=<%s> route=%s relay=%s source=%s tls=%s verified=%s delay=%s outcome=%s reply=%s" % (
        _word(f.get("queue_id")), _address(f.get("recipient")), _word(f.get("route")), _relay(f),
        _word(f.get("source")), _word(f.get("tls")),
        "yes" if f.get("tls_verified") else "no", _delay(f.get("delay")), _word(f.get("outcome")),
        _quoted(f.get("reply")))


def _local_delivery(f):
    return "%s: stored mailbox=<%s> folder=%s" % (
        _word(f.get("queue_id")), _address(f.get("mailbox")), _word(f.get("folder")))


def _report(f):
    return "%s: report kind=%s notify=<%s> id=%s" % (
        _word(f.get("queue_id")), _word(f.get("kind")), _address(f.get("recipient")), _word(f.get("report_id")))


def _login(f):
    return "login %s %s [%s] %s" % (
        _word(f.get("protocol")), _word(f.get("mailbox")), _word(f.get("client_address")), _word(f.get("outcome")))


def _refused(f):
    return "refused %s %s [%s] %s %s" % (
        _word(f.get("protocol")), _word(f.get("listener")), _word(f.get("client_address")),
        _quoted(f.get("code")), _word(f.get("reason")))


def _refusals_suppressed(f):
    return "%s suppressed=%s in=%ss" % (_refused(f), _word(f.get("suppressed")), _word(f.get("window")))


_LINES = {ACCEPTED: _accepted, DELIVERY: _delivery, LOCAL_DELIVERY: _local_delivery, REPORT: _report,
          LOGIN: _login, REFUSED: _refused, REFUSALS_SUPPRESSED: _refusals_suppressed}


def line(kind, /, **fields):
    """The log line of an event of C{kind} with C{fields}."""
    return _LINES[kind](fields)


def emit(log, kind, /, **fields):
    """
    Emit the event on C{log} (a L{twisted.logger.Logger}).  Its format is
    the finished line with its braces doubled, so the text in the log is
    exactly L{line} whatever the values hold, while observers get the
    fields as they are.
    """
    text = line(kind, **fields)
    log.info(text.replace("{", "{{").replace("}", "}}"), log_trekmail=kind, **fields)


def emit_unlogged(log, kind, /, **fields):
    """
    The event without its line: observers (the metrics) see it, a log
    file does not (an event without a format writes no text).  For a
    step whose lines are aggregated (L{trekmail.refusallog}).
    """
    log.info(None, log_trekmail=kind, **fields)


def emit_accepted(log, queue_id, listener, client_address, helo, user, sender, recipients, message):
    """The C{accepted} event of a door that took C{message} (bytes) for C{recipients}; C{helo} as the client sent it."""
    emit(log, ACCEPTED, queue_id=queue_id, listener=listener, client_address=client_address,
         client_name=helo.decode("ascii", "replace") if isinstance(helo, bytes) else helo, user=user,
         sender=sender, recipients=len(recipients), size=len(message), message_id=message_id(message))


def watch_login(log, protocol, client_address, attempted, d, mailbox_of):
    """
    Log the login that C{d} (a L{trekmail.policy.logins.LoginGuard}
    attempt) decides, and pass its result or failure on.  The mailbox is
    C{mailbox_of(result)} for a success and the name the client gave
    (C{attempted}) for a failure, as the operator looks for either.
    """
    def done(result):
        emit(log, LOGIN, protocol=protocol, client_address=client_address, mailbox=_text(mailbox_of(result)),
             outcome=OK)
        return result

    def refused(failure):
        if failure.check(Throttled):
            outcome = THROTTLED
        elif failure.check(Busy):
            outcome = BUSY
        elif failure.check(UnauthorizedLogin):
            outcome = FAILED
        else:
            outcome = UNAVAILABLE
        emit(log, LOGIN, protocol=protocol, client_address=client_address, mailbox=_text(attempted) or None,
             outcome=outcome)
        return failure

    return d.addCallbacks(done, refused)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def message_id(message):
    """
    The C{Message-ID} field of C{message} (bytes, CRLF), unfolded, or
    C{None}; one bounded pass over the start of the header.
    """
    head = message[:MAX_HEADER_SCAN]
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        head = head[:end + 2]
    start = 0
    while start < len(head):
        stop = head.find(b"\r\n", start)
        if stop < 0:
            stop = len(head)
        if head[start:start + 11].lower() == b"message-id:":
            value = head[start + 11:stop]
            while stop + 2 < len(head) and head[stop + 2:stop + 3] in (b" ", b"\t"):
                following = head.find(b"\r\n", stop + 2)
                following = len(head) if following < 0 else following
                value += head[stop + 2:following]
                stop = following
            return " ".join(value.decode("utf-8", "replace").split()) or None
        start = stop + 2
    return None


_QUEUE_LINE = re.compile(r"(\S+): ")
_LOGIN_LINE = re.compile(r"login \S+ (\S+) \[")
_REPORT_ID = re.compile(r"report kind=\S+ notify=<\S*> id=(\S+)$")


def log_files(path):
    """C{path} and what twistd rotated out of it (C{path.1} newest, higher older), oldest first."""
    rotated = []
    number = 1
    while os.path.exists("%s.%d" % (path, number)):
        rotated.append("%s.%d" % (path, number))
        number += 1
    return rotated[::-1] + [path]


def _entries(paths, since):
    """C{(line, message)} for each line of the logs at C{paths} written at or after C{since}."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for text in f:
                text = text.rstrip("\n")
                stamp, _, rest = text.partition(" ")
                _, bracket, message = rest.partition("] ")
                if not bracket:
                    continue
                if since is not None:
                    try:
                        when = datetime.datetime.fromisoformat(stamp)
                    except ValueError:
                        continue
                    if _aware(when) < since:
                        continue
                yield text, message


def _aware(when):
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)


def trace(paths, target, since=None):
    """
    The lines of the logs at C{paths} about C{target}, in order: a queue
    id's lines, or for an address every message whose lines name it and
    the logins to it; a report's lines follow the message it reports on.
    C{since} is an ISO 8601 date or time (UTC unless it says otherwise).
    Two passes over the files, so a large log is read, never held.
    """
    if since is not None:
        since = _aware(datetime.datetime.fromisoformat(since))
    address = "@" in target
    wanted = set()
    if address:
        named = "<%s>" % (target.lower(),)
        for _, message in _entries(paths, since):
            found = _QUEUE_LINE.match(message)
            if found and named in message.lower():
                wanted.add(found.group(1))
    else:
        wanted.add(target)
    lines = []
    for text, message in _entries(paths, since):
        found = _QUEUE_LINE.match(message)
        if found and found.group(1) in wanted:
            lines.append(text)
            report = _REPORT_ID.search(message)
            if report:
                wanted.add(report.group(1))
        elif address:
            login = _LOGIN_LINE.match(message)
            if login and login.group(1).lower() == target.lower():
                lines.append(text)
    return lines
