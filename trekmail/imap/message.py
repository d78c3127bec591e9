"""
The MIME structure of one stored message, and the FETCH answers that
depend on it (ENVELOPE, BODYSTRUCTURE, BODY[section]).

Twisted's IMAP4Server rebuilds ENVELOPE and BODYSTRUCTURE from an
C{email} object on every FETCH (half its CPU under imaptest,
bench/imap.py) and loses the blank line that ends C{BODY[HEADER]}.  Here a
message is parsed once into byte offsets; the two structures are rendered
once to wire bytes and cached in the index, and sections are sliced out of
the raw bytes so that what a client reads is exactly what was stored.
"""

import functools
import re

from trekmail.imap import addresses

MAX_DEPTH = 20
"""Deeper MIME nesting is treated as an opaque leaf: bounds the work a hostile message can cause."""

MAX_PARTS = 1000
"""Parts parsed per message; past them the rest of the multipart being split is one opaque leaf.  700,000 empty
parts in 4.9 MB cost 530 MB and a 44 MB BODYSTRUCTURE when every one was parsed; no client shows a thousand."""

_UNQUOTABLE = re.compile(rb'[\r\n\0"\\]')
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class Part:
    __slots__ = ("start", "body_start", "end", "fields", "maintype", "subtype", "params", "children", "message")

    def __init__(self, start, body_start, end, fields):
        self.start = start
        self.body_start = body_start
        self.end = end
        # The first of each name: ENVELOPE and BODYSTRUCTURE look up a score of names per part.
        self.fields = dict(reversed(fields))
        self.children = ()
        self.message = None

    def field(self, name):
        return self.fields.get(name)


def _header_end(raw, start, end):
    """Offset just past the blank line ending the header (or C{end} if none)."""
    if raw.startswith(b"\r\n", start):
        return start + 2
    if raw.startswith(b"\n", start):
        return start + 1
    index = raw.find(b"\n\r\n", start, end)
    # Only a bare-LF blank line before the CRLF one matters: do not scan the whole body for one.
    index2 = raw.find(b"\n\n", start, end if index == -1 else index + 1)
    if index == -1 and index2 == -1:
        return end
    if index2 == -1 or (index != -1 and index < index2):
        return index + 3
    return index2 + 2


def _fields(header):
    """C{(name, unfolded value)} per field; continuation lines are gathered and joined once, as joining them one by one is quadratic in a long folded field."""
    groups = []
    for line in header.decode("latin-1").replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line[0] in " \t":
            if groups:
                groups[-1].append(line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon:
            groups.append([name.strip().lower(), value.strip()])
    return [(group[0], " ".join(group[1:])) for group in groups]


def _content_type(value, default):
    if not value:
        return default[0], default[1], []
    kind, _, rest = value.partition(";")
    maintype, slash, subtype = kind.strip().lower().partition("/")
    if not slash or not maintype or not subtype:
        maintype, subtype = default
    return maintype, subtype, _params(";" + rest)


def _params(text):
    params = []
    for name, value in _PARAM.findall(text):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.append((name.lower(), value))
    return params


def parse(raw, start=0, end=None, default=("text", "plain"), depth=0, budget=None):
    """The part tree of C{raw[start:end]}; C{budget} is the one-element list of parts the whole message may still have."""
    budget = [MAX_PARTS] if budget is None else budget
    budget[0] -= 1
    end = len(raw) if end is None else end
    body_start = min(_header_end(raw, start, end), end)
    part = Part(start, body_start, end, _fields(raw[start:body_start]))
    part.maintype, part.subtype, part.params = _content_type(part.field("content-type"), default)
    if depth >= MAX_DEPTH:
        return part
    if part.maintype == "multipart":
        boundary = dict(part.params).get("boundary")
        if boundary:
            part.children = _split(raw, body_start, end, boundary.encode("latin-1"), part.subtype, depth, budget)
        if not part.children:
            part.maintype, part.subtype, part.params = "text", "plain", []
    elif (part.maintype, part.subtype) == ("message", "rfc822"):
        part.message = parse(raw, body_start, end, depth=depth + 1, budget=budget)
    return part


def _delimiters(raw, start, end, delimiter, room):
    """C{(before, content_start, closing)} per delimiter line, at most C{room} of them."""
    positions = []
    index = start
    while len(positions) < room:
        found = raw.find(delimiter, index, end)
        if found == -1:
            break
        at_line_start = found == start or raw[found - 1:found] == b"\n"
        line_end = raw.find(b"\n", found, end)
        line_end = end if line_end == -1 else line_end + 1
        if at_line_start:
            closing = raw.startswith(b"--", found + len(delimiter))
            before = found - 2 if raw[found - 2:found] == b"\r\n" else found - 1
            positions.append((max(before, start), line_end, closing))
            if closing:
                break
        index = line_end
    return positions


def _closing_delimiter(raw, start, end, boundary):
    """Where the opaque rest of a multipart cut short by L{MAX_PARTS} ends: before its closing delimiter line, if any."""
    found = raw.rfind(b"\n--" + boundary + b"--", start, end)
    if found == -1:
        return end
    return max(start, found - 1 if raw[found - 1:found] == b"\r" else found)


def _split(raw, start, end, boundary, subtype, depth, budget):
    default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
    room = max(budget[0], 1) + 1
    positions = _delimiters(raw, start, end, b"--" + boundary, room)
    truncated = len(positions) == room and not positions[-1][2]
    children = []
    for (_, content_start, closing), (next_end, _, _) in zip(positions, positions[1:]):
        if closing:
            break
        if budget[0] <= 0:
            children.append(parse(raw, content_start, _closing_delimiter(raw, content_start, end, boundary),
                                  default, MAX_DEPTH, budget))
            return children
        children.append(parse(raw, content_start, max(next_end, content_start), default, depth + 1, budget))
    if positions and not positions[-1][2] and positions[-1][1] < end:
        if truncated or budget[0] <= 0:
            rest = _closing_delimiter(raw, positions[-1][1], end, boundary)
            children.append(parse(raw, positions[-1][1], rest, default, MAX_DEPTH, budget))
        else:
            children.append(parse(raw, positions[-1][1], end, default, depth + 1, budget))
    return children


def nstring(value):
    """An IMAP nstring: quoted when it can be, else a literal."""
    if value is None:
        return b"NIL"
    if isinstance(value, str):
        value = value.encode("utf-8")
    if len(value) < 1024 and not _UNQUOTABLE.search(value):
        return b'"' + value + b'"'
    return b"{%d}\r\n" % len(value) + value


def _n(value):
    """Header text was decoded as latin-1 so that encoding it back gives the bytes as stored."""
    return nstring(value.encode("latin-1", "replace") if isinstance(value, str) else value)


def _plist(params):
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_n(k.upper()) + b" " + _n(v) for k, v in params) + b")"


def _addresses(value):
    """An ENVELOPE address list (RFC 3501 7.4.2): a group is its start marker, its members and its end marker."""
    if value is None:
        return b"NIL"
    out = []
    for item in addresses.parse(value):
        if isinstance(item, addresses.GroupStart):
            out.append(b"(NIL NIL " + _n(item.name) + b" NIL)")
        elif isinstance(item, addresses.GroupEnd):
            out.append(b"(NIL NIL NIL NIL)")
        else:
            out.append(b"(" + b" ".join((_n(item.name), _n(item.route), _n(item.local), _n(item.domain))) + b")")
    if not out:
        return b"NIL"
    return b"(" + b"".join(out) + b")"


def envelope(part):
    sender, reply_to = part.field("sender"), part.field("reply-to")
    from_ = _addresses(part.field("from"))
    items = [
        _n(part.field("date")),
        _n(part.field("subject")),
        from_,
        _addresses(sender) if sender else from_,
        _addresses(reply_to) if reply_to else from_,
        _addresses(part.field("to")),
        _addresses(part.field("cc")),
        _addresses(part.field("bcc")),
        _n(part.field("in-reply-to")),
        _n(part.field("message-id")),
    ]
    return b"(" + b" ".join(items) + b")"


def _disposition(part):
    value = part.field("content-disposition")
    if not value:
        return b"NIL"
    kind, _, rest = value.partition(";")
    return b"(" + _n(kind.strip().lower() or "attachment") + b" " + _plist(_params(";" + rest)) + b")"


def _language(part):
    value = part.field("content-language")
    if not value:
        return b"NIL"
    tags = [t.strip() for t in value.split(",") if t.strip()]
    if len(tags) == 1:
        return _n(tags[0])
    return b"(" + b" ".join(_n(t) for t in tags) + b")"


def bodystructures(raw, part):
    """
    C{(BODYSTRUCTURE, BODY)} of a part in one walk of its tree: BODY is
    BODYSTRUCTURE without the extension data, and the rest (parameters,
    a text part's line count over its whole body) need not be worked out
    twice.
    """
    if part.children:
        pairs = [bodystructures(raw, child) for child in part.children]
        subtype = b" " + _n(part.subtype.upper())
        extension = b" " + b" ".join((_plist(part.params), _disposition(part), _language(part),
                                      _n(part.field("content-location"))))
        return (b"(" + b"".join(full for full, _ in pairs) + subtype + extension + b")",
                b"(" + b"".join(plain for _, plain in pairs) + subtype + b")")
    params = part.params
    if part.maintype == "text" and not any(k == "charset" for k, _ in params):
        params = [("charset", "us-ascii")] + list(params)
    size = part.end - part.body_start
    items = [
        _n(part.maintype.upper()), _n(part.subtype.upper()), _plist(params),
        _n(part.field("content-id")), _n(part.field("content-description")),
        _n((part.field("content-transfer-encoding") or "7bit").upper()), b"%d" % size,
    ]
    lines = b"%d" % raw.count(b"\n", part.body_start, part.end)
    full_items, plain_items = items, items
    if part.message is not None:
        inner_full, inner_plain = bodystructures(raw, part.message)
        inner_envelope = envelope(part.message)
        full_items = items + [inner_envelope, inner_full, lines]
        plain_items = items + [inner_envelope, inner_plain, lines]
    elif part.maintype == "text":
        full_items = plain_items = items + [lines]
    extension = [_n(part.field("content-md5")), _disposition(part), _language(part),
                 _n(part.field("content-location"))]
    return b"(" + b" ".join(full_items + extension) + b")", b"(" + b" ".join(plain_items) + b")"


def structures(raw):
    """C{(ENVELOPE, BODYSTRUCTURE, BODY)} as wire bytes: what the index caches."""
    top = parse(raw)
    return (envelope(top),) + bodystructures(raw, top)


class SectionError(ValueError):
    pass


_BLANK_LINE = re.compile(rb"\n\r*(?:\n|\Z)")
_BLANK_START = re.compile(rb"\r*(?:\n|\Z)")


_FIELD_SPACE = b" \t\r\x0b\x0c"


def header_index(header):
    """
    Each field of a header as C{(name, text)}: the name is what precedes
    the first colon (the whole line if none), stripped of ASCII white
    space and lowercased (only ASCII letters fold, as field names are
    ASCII, RFC 5322 2.2); the text is the field's lines, continuation
    lines included, without the last newline.  The header ends at its
    first blank line; a continuation line with no field before it
    belongs to none.
    """
    if _BLANK_START.match(header):
        return ()
    blank = _BLANK_LINE.search(header)
    if blank is not None:
        header = header[:blank.start()]
    groups = []
    for line in header.split(b"\n"):
        if line.startswith((b" ", b"\t")):
            if groups:
                groups[-1].append(line)
        else:
            groups.append([line.partition(b":")[0].strip(_FIELD_SPACE).lower(), line])
    return tuple((group[0], b"\n".join(group[1:])) for group in groups)


@functools.lru_cache(maxsize=256)
def _wanted(names):
    return frozenset(n.encode("latin-1", "replace").lower() for n in names)


def _select(fields, names, negate):
    """C{BODY[HEADER.FIELDS (names)]} (or C{.NOT}) from a L{header_index}."""
    wanted = _wanted(tuple(names))
    out = [text for name, text in fields if (name in wanted) != negate]
    if not out:
        return b"\r\n"
    return b"\n".join(out) + b"\n\r\n"


def _header_fields(raw, part, names, negate):
    return _select(header_index(raw[part.start:part.body_start]), names, negate)


KEPT_FIELDS = 500
KEPT_PARTS = 100
"""A kept message keeps its index and tree only up to these counts: a header of a million one-letter lines, or a
message of a million empty parts, would otherwise cost far more memory than the bytes the cache counts."""


class Kept(bytes):
    """
    A message's bytes while the store keeps them in memory, with what was
    worked out from them the first time it was needed: the top-level
    L{header_index} and the MIME tree.  Clients ask header fields of the
    same messages on every resync, each time a different choice of names
    (imaptest picks one to four of seven at random), so one answer kept
    per message seldom helped, and finding the fields again was the
    costliest step of such a FETCH; with the index each answer is a pass
    over a score of names.  What is kept is about the header's size
    again, and a few objects per MIME part (bounded by L{KEPT_FIELDS} and
    L{KEPT_PARTS}).
    """

    fields = None
    tree = None


def _top_header_fields(raw, names, negate):
    fields = raw.fields if type(raw) is Kept else None
    if fields is None:
        fields = header_index(raw[:_header_end(raw, 0, len(raw))])
        if type(raw) is Kept and len(fields) <= KEPT_FIELDS:
            raw.fields = fields
    return _select(fields, names, negate)


def _count_parts(part, limit):
    count = 1
    children = list(part.children) + ([part.message] if part.message is not None else [])
    for child in children:
        count += _count_parts(child, limit - count)
        if count > limit:
            break
    return count


def _tree(raw):
    tree = raw.tree if type(raw) is Kept else None
    if tree is None:
        tree = parse(raw)
        if type(raw) is Kept and _count_parts(tree, KEPT_PARTS) <= KEPT_PARTS:
            raw.tree = tree
    return tree


class TreeOnce:
    """
    The MIME tree of one message, parsed at most once however many of its
    sections one FETCH asks for: a message past L{KEPT_PARTS} keeps no
    tree, and C{BODY[1] BODY[2] ...} of it parsed the whole message again
    for each.
    """

    __slots__ = ("raw", "tree")

    def __init__(self, raw):
        self.raw = raw
        self.tree = None

    def __call__(self):
        if self.tree is None:
            self.tree = _tree(self.raw)
        return self.tree


def section(raw, path, text, names=(), tree=None):
    """
    The bytes of C{BODY[path.text]}: C{path} is a tuple of part numbers,
    C{text} one of C{""}, C{HEADER}, C{TEXT}, C{MIME}, C{HEADER.FIELDS},
    C{HEADER.FIELDS.NOT}.  C{tree}: a L{TreeOnce} of C{raw}, to share one
    parse among several sections.
    """
    if not path and text != "MIME":
        # The top level needs only where the header ends, not the MIME tree (most FETCHes of a section).
        if text == "":
            return raw
        if text.startswith("HEADER.FIELDS"):
            return _top_header_fields(raw, names, text == "HEADER.FIELDS.NOT")
        body_start = _header_end(raw, 0, len(raw))
        if text == "HEADER":
            return raw[:body_start]
        return raw[body_start:]
    part = _tree(raw) if tree is None else tree()
    for depth, number in enumerate(path):
        # Past the first number a message/rfc822 part is numbered as the message it holds (RFC 3501 6.4.5); the
        # first number of a message whose whole body is message/rfc822 is that body, the inner message entire.
        if depth and part.message is not None:
            part = part.message
        if part.children:
            if not 1 <= number <= len(part.children):
                return b""
            part = part.children[number - 1]
        elif number != 1:
            return b""
    if text == "MIME":
        if not path:
            raise SectionError("MIME needs a part number")
        return raw[part.start:part.body_start]
    if path and text in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        if part.message is None:
            return b""
        part = part.message
    if text == "":
        if path:
            return raw[part.body_start:part.end]
        return raw
    if text == "HEADER":
        return raw[part.start:part.body_start]
    if text == "TEXT":
        return raw[part.body_start:part.end]
    return _header_fields(raw, part, names, text == "HEADER.FIELDS.NOT")
