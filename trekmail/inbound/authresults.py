"""
The C{Authentication-Results:} field (RFC 8601) carrying our verdicts,
and the removal of fields that claim our authserv-id but arrived with
the message (RFC 8601 5): only ours may speak for this host.
"""

import re

_FIELD = b"authentication-results:"
_COMMENT = re.compile(rb"\([^()]*\)")
"""Comments before the authserv-id; one level is what RFC 8601 examples use, and this never backtracks."""


def _value(text):
    """C{text} made safe for a field value: no CR, LF, semicolons or parentheses from the message."""
    return "".join(c for c in text if c.isprintable() and c not in ";()\"\\ ") or "unknown"


def field(authserv_id, spf_mailfrom, spf_helo, dkim_results, dmarc, arc):
    """The whole field, folded one method per line, ending in CRLF."""
    methods = ["spf=%s smtp.mailfrom=%s" % (spf_mailfrom.result, _value(spf_mailfrom.identity)),
               "spf=%s smtp.helo=%s" % (spf_helo.result, _value(spf_helo.identity))]
    if dkim_results:
        methods.extend("dkim=%s header.d=%s header.s=%s header.b=%s" % (
            d.result, _value(d.domain), _value(d.selector), _value(d.signature)) for d in dkim_results)
    else:
        methods.append("dkim=none")
    if dmarc.result in ("pass", "fail"):
        methods.append("dmarc=%s (p=%s) header.from=%s" % (dmarc.result, dmarc.policy, _value(dmarc.header_from)))
    elif dmarc.header_from:
        methods.append("dmarc=%s header.from=%s" % (dmarc.result, _value(dmarc.header_from)))
    else:
        methods.append("dmarc=%s" % (dmarc.result,))
    methods.append("arc=%s" % (arc,))
    return ("Authentication-Results: %s;\r\n\t" % (authserv_id,) + ";\r\n\t".join(methods) + "\r\n").encode("ascii")


def _authserv_id(value):
    value = _COMMENT.sub(b" ", value.split(b";", 1)[0])
    words = value.split()
    return words[0].decode("ascii", "replace").lower() if words else ""


def without_ours(message, authserv_id):
    """C{message} without the Authentication-Results fields whose authserv-id is C{authserv_id}."""
    end = message.find(b"\r\n\r\n")
    head, rest = (message, b"") if end < 0 else (message[:end + 2], message[end + 2:])
    fields = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    ours = authserv_id.lower()
    kept = [f for f in fields
            if not (f[0].lower().startswith(_FIELD) and _authserv_id(b" ".join(f)[len(_FIELD):]) == ours)]
    if len(kept) == len(fields):
        return message
    return b"".join(b"\r\n".join(f) + b"\r\n" for f in kept) + rest
