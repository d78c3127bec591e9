"""
FETCH: parsing the attribute list and rendering each message's answer.

The whole answer of a command is built into one buffer and written once:
Twisted's server wrote after every item, which PEERS.md measured as a
quarter of its CPU in syscalls.  ENVELOPE and BODYSTRUCTURE come from the
index's cache (L{trekmail.imap.message}), so a message's MIME structure is
parsed once in its life, not once per FETCH.
"""

import functools
import re
import time

from trekmail.imap import message
from trekmail.imap.parser import Atom, ProtocolError

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
        self.wants_structure = any(i in ("ENVELOPE", "BODYSTRUCTURE", "BODY") for i in items)
        self.wants_raw = any(isinstance(i, Section) or i in ("RFC822", "RFC822.HEADER", "RFC822.TEXT")
                             for i in items)
        self.sets_seen = any((isinstance(i, Section) and not i.peek) or i in ("RFC822", "RFC822.TEXT")
                             for i in items)
        self.wants_modseq = "MODSEQ" in items


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
            items.append(_section(name))
    return Request(items)


def changedsince(args):
    """RFC 7162 FETCH modifier C{(CHANGEDSINCE n)}: returns n or C{None}."""
    if len(args) == 2 and isinstance(args[1], list):
        modifier = args[1]
        if len(modifier) == 2 and str(modifier[0]).upper() == "CHANGEDSINCE":
            try:
                return int(modifier[1])
            except ValueError:
                pass
        raise ProtocolError("Invalid FETCH modifier")
    return None


@functools.lru_cache(maxsize=4096)
def flag_list(flags):
    """C{(\\Seen $Work)} for a frozenset of flags: a folder has few distinct sets, so render each once."""
    return b"(" + " ".join(sorted(flags)).encode() + b")"


def internaldate(seconds):
    t = time.gmtime(seconds)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (t.tm_mday, _MONTHS[t.tm_mon - 1].encode(), t.tm_year,
                                                     t.tm_hour, t.tm_min, t.tm_sec)


def _literal(data):
    return b"{%d}\r\n" % len(data) + data


def _section_bytes(raw, section):
    try:
        data = message.section(raw, section.path, section.text, section.names)
    except message.SectionError as e:
        raise ProtocolError(str(e)) from None
    label = b"BODY[" + section.label.encode() + b"]"
    if section.start is not None:
        data = data[section.start:section.start + section.length]
        label += b"<%d>" % section.start
    return label + b" " + _literal(data)


def render(request, seq, uid, msg, flags, structure, raw, add_uid):
    """One message's C{* n FETCH (...)} line; C{raw} is C{None} if the file vanished."""
    out = []
    if add_uid and "UID" not in request.items:
        out.append(b"UID %d" % uid)
    for item in request.items:
        if item == "UID":
            out.append(b"UID %d" % uid)
        elif item == "FLAGS":
            out.append(b"FLAGS " + flag_list(flags))
        elif item == "INTERNALDATE":
            out.append(b"INTERNALDATE " + internaldate(msg.date))
        elif item == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % msg.size)
        elif item == "MODSEQ":
            out.append(b"MODSEQ (%d)" % msg.modseq)
        elif item == "ENVELOPE":
            out.append(b"ENVELOPE " + structure[0])
        elif item == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + structure[1])
        elif item == "BODY":
            out.append(b"BODY " + structure[2])
        elif item == "RFC822":
            out.append(b"RFC822 " + _literal(raw))
        elif item == "RFC822.HEADER":
            out.append(b"RFC822.HEADER " + _literal(message.section(raw, (), "HEADER")))
        elif item == "RFC822.TEXT":
            out.append(b"RFC822.TEXT " + _literal(message.section(raw, (), "TEXT")))
        else:
            out.append(_section_bytes(raw, item))
    return b"* %d FETCH (" % seq + b" ".join(out) + b")\r\n"
