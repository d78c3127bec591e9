"""
FETCH: parsing the attribute list and rendering each message's answer.

The whole answer of a command is built into one buffer and written once:
Twisted's server wrote after every item, which a profile of it under imaptest put at a
quarter of its CPU in syscalls.  ENVELOPE and BODYSTRUCTURE come from the
index's cache (L{trekmail.imap.message}), so a message's MIME structure is
parsed once in its life, not once per FETCH.
"""

import functools
import re
import time

from trekmail.imap import message
from trekmail.imap.parser import Atom, ProtocolError, number

MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
SIMPLE = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "MODSEQ",
          "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
_BODY = re.compile(r"^(BODY|BODY\.PEEK)\[([^\]]*)\](?:<(\d+)\.(\d+)>)?$", re.I)
_SECTION = re.compile(r"^((?:\d+\.)*\d+)?\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?(?:\s*\((.*)\))?$", re.I)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Section:
    __slots__ = ("label", "path", "text", "names", "start", "length", "peek")

    def __init__(self, label, path, text, names, start, length, peek):
        self.label = label
        self.path = path
        self.text = text
        self.names = names
        self.start = start
        self.length = length
        self.peek = peek


class Request:
    """What a FETCH asks for, and so what it must load."""

    def __init__(self, items):
        self.items = items
        sections = [i for i in items if isinstance(i, Section)]
        names = {i for i in items if not isinstance(i, Section)}
        self.wants_structure = not names.isdisjoint(("ENVELOPE", "BODYSTRUCTURE", "BODY"))
        self.wants_raw = bool(sections) or not names.isdisjoint(("RFC822", "RFC822.HEADER", "RFC822.TEXT"))
        self.sets_seen = any(not s.peek for s in sections) or not names.isdisjoint(("RFC822", "RFC822.TEXT"))
        self.wants_modseq = "MODSEQ" in names


def _section(spec):
    match = _BODY.match(spec)
    if not match:
        raise ProtocolError("Invalid FETCH attribute %s" % (spec[:40],))
    kind, inner, start, length = match.groups()
    section = _SECTION.match(inner.strip())
    if section is None:
        raise ProtocolError("Invalid section")
    path_text, text, names = section.groups()
    text = (text or "").upper()
    path = tuple(int(p) for p in path_text.split(".")) if path_text else ()
    if any(p == 0 for p in path):
        raise ProtocolError("Invalid section")
    if text.startswith("HEADER.FIELDS"):
        if names is None or not names.split():
            raise ProtocolError("Missing header field names")
        names = tuple(n.strip('"') for n in names.split())
    elif names is not None:
        raise ProtocolError("Invalid section")
    label = inner.strip().upper()
    if text.startswith("HEADER.FIELDS"):
        prefix = (path_text + ".") if path_text else ""
        label = "%s%s (%s)" % (prefix, text, " ".join(n.upper() for n in names))
    return Section(label, path, text, names or (), int(start) if start else None,
                   int(length) if length else None, kind.upper().endswith(".PEEK"))


_short_section = functools.lru_cache(maxsize=512)(_section)
"""Clients send the same few sections over and over (a L{Section} is never changed); long ones are not kept."""
SHORT_SECTION = 256


def parse(args):
    """The arguments after the sequence set -> L{Request}."""
    if len(args) != 1:
        if len(args) == 2 and isinstance(args[1], list):
            args = args[:1]
        else:
            raise ProtocolError("Invalid FETCH arguments")
    value = args[0]
    names = value if isinstance(value, list) else [value]
    if not names:
        raise ProtocolError("Empty FETCH list")
    items = []
    for name in names:
        if not isinstance(name, Atom):
            raise ProtocolError("Invalid FETCH attribute")
        upper = name.upper()
        if upper in MACROS and not isinstance(value, list):
            items.extend(MACROS[upper])
        elif upper in SIMPLE:
            items.append(upper)
        else:
            items.append(_short_section(name) if len(name) <= SHORT_SECTION else _section(name))
    return Request(items)


def changedsince(args):
    """RFC 7162 FETCH modifier C{(CHANGEDSINCE n)}: returns n or C{None}."""
    if len(args) == 2 and isinstance(args[1], list):
        modifier = args[1]
        if len(modifier) == 2 and str(modifier[0]).upper() == "CHANGEDSINCE":
            return number(modifier[1], "CHANGEDSINCE")
        raise ProtocolError("Invalid FETCH modifier")
    return None


@functools.lru_cache(maxsize=4096)
def flag_list(flags):
    """C{(\\Seen $Work)} for a frozenset of flags: a folder has few distinct sets, so render each once."""
    return b"(" + " ".join(sorted(flags)).encode() + b")"


@functools.lru_cache(maxsize=32768)
def internaldate(seconds):
    """Cached: a message's date is asked for on every FETCH of it, and C{gmtime} costs more than a lookup."""
    t = time.gmtime(seconds)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (t.tm_mday, _MONTHS[t.tm_mon - 1].encode(), t.tm_year,
                                                     t.tm_hour, t.tm_min, t.tm_sec)


def _literal(data):
    return b"{%d}\r\n" % len(data) + data


def _section_item(section):
    label = b"BODY[" + section.label.encode() + b"]"
    if section.start is not None:
        label += b"<%d>" % section.start
    label += b" "

    def item(uid, msg, flags, structure, raw, tree):
        try:
            data = message.section(raw, section.path, section.text, section.names, tree)
        except message.SectionError as e:
            raise ProtocolError(str(e)) from None
        if section.start is not None:
            data = data[section.start:section.start + section.length]
        return label + _literal(data)
    return item


_ITEMS = {
    "UID": lambda uid, msg, flags, structure, raw: b"UID %d" % uid,
    "FLAGS": lambda uid, msg, flags, structure, raw: b"FLAGS " + flag_list(flags),
    "INTERNALDATE": lambda uid, msg, flags, structure, raw: b"INTERNALDATE " + internaldate(msg.date),
    "RFC822.SIZE": lambda uid, msg, flags, structure, raw: b"RFC822.SIZE %d" % msg.size,
    "MODSEQ": lambda uid, msg, flags, structure, raw: b"MODSEQ (%d)" % msg.modseq,
    "ENVELOPE": lambda uid, msg, flags, structure, raw: b"ENVELOPE " + structure[0],
    "BODYSTRUCTURE": lambda uid, msg, flags, structure, raw: b"BODYSTRUCTURE " + structure[1],
    "BODY": lambda uid, msg, flags, structure, raw: b"BODY " + structure[2],
    "RFC822": lambda uid, msg, flags, structure, raw: b"RFC822 " + _literal(raw),
    "RFC822.HEADER": lambda uid, msg, flags, structure, raw: (
        b"RFC822.HEADER " + _literal(message.section(raw, (), "HEADER"))),
    "RFC822.TEXT": lambda uid, msg, flags, structure, raw: b"RFC822.TEXT " + _literal(message.section(raw, (), "TEXT")),
}


def renderer(request, add_uid):
    """
    C{render(seq, uid, msg, flags, structure, raw)}: one message's
    C{* n FETCH (...)} line (C{raw} is C{None} if the file vanished).
    What each item needs is looked up once per command, not once per
    message and item; FLAGS alone (with UID), what a client's resync asks
    of every message, is one formatting step.
    """
    names = request.items
    if add_uid and "UID" not in names:
        names = ["UID"] + names
    if names == ["FLAGS"]:
        return lambda seq, uid, msg, flags, structure, raw: b"* %d FETCH (FLAGS %s)\r\n" % (seq, flag_list(flags))
    if names == ["UID", "FLAGS"]:
        return lambda seq, uid, msg, flags, structure, raw: (
            b"* %d FETCH (UID %d FLAGS %s)\r\n" % (seq, uid, flag_list(flags)))
    items = [_ITEMS[i] for i in names if not isinstance(i, Section)]
    if len(items) == len(names):
        def render(seq, uid, msg, flags, structure, raw):
            return b"* %d FETCH (" % seq + b" ".join([i(uid, msg, flags, structure, raw) for i in items]) + b")\r\n"
        return render
    items = [(_section_item(i), True) if isinstance(i, Section) else (_ITEMS[i], False) for i in names]

    def render_sections(seq, uid, msg, flags, structure, raw):
        tree = message.TreeOnce(raw)
        return b"* %d FETCH (" % seq + b" ".join([
            i(uid, msg, flags, structure, raw, tree) if needs_tree else i(uid, msg, flags, structure, raw)
            for i, needs_tree in items]) + b")\r\n"
    return render_sections
