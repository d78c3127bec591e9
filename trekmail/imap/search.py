"""
SEARCH criteria (RFC 3501 6.4.4, plus MODSEQ of RFC 7162), compiled once
into a predicate.

Twisted's server walks the mailbox in Python and reads every message for
any criterion.  Here criteria on flags, UIDs, sizes and dates run against
the in-memory index alone; only header and body criteria read the files,
and they are read on the worker thread, never on the reactor.
"""

import datetime
import email.utils

from trekmail.imap import addresses, parser
from trekmail.imap.parser import Atom, ProtocolError

_MONTHS = {m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP",
                                       "OCT", "NOV", "DEC"), 1)}
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True), "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False), "OLD": ("\\Recent", False),
}
MAX_KEYS = 1000
MAX_DEPTH = 100
"""
Deepest nesting of NOT, OR and parentheses: the criteria are compiled and
run by recursion, and a client's C{NOT NOT ... ALL} must not reach
Python's recursion limit.
"""
CHARSETS = {"UTF-8": "utf-8", "US-ASCII": "ascii"}


class Item:
    """One message as a criterion sees it."""

    __slots__ = ("seq", "uid", "msg", "flags", "raw", "_header")

    def __init__(self, seq, uid, msg, flags, raw=None):
        self.seq = seq
        self.uid = uid
        self.msg = msg
        self.flags = flags
        self.raw = raw
        self._header = None

    def header(self):
        if self._header is None:
            end = self.raw.find(b"\r\n\r\n")
            end = len(self.raw) if end == -1 else end
            text = self.raw[:end].decode("utf-8", "replace").replace("\r\n", "\n")
            text = text.replace("\n ", " ").replace("\n\t", " ")
            fields = {}
            for line in text.split("\n"):
                name, colon, value = line.partition(":")
                if colon:
                    fields.setdefault(name.strip().lower(), []).append(value.strip())
            self._header = fields
        return self._header

    def body(self):
        end = self.raw.find(b"\r\n\r\n")
        return b"" if end == -1 else self.raw[end + 4:]


def _date(value):
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    try:
        day, month, year = text.split("-")
        return datetime.date(int(year), _MONTHS[month.upper()], int(day))
    except (ValueError, KeyError):
        raise ProtocolError("Invalid date %s" % (text[:20],)) from None


def _sent_date(item):
    values = item.header().get("date")
    if not values:
        return None
    parsed = email.utils.parsedate_tz(values[0])
    if parsed is None:
        return None
    try:
        return datetime.date(*parsed[:3])
    except ValueError:
        return None


def _internal_date(item):
    return datetime.datetime.fromtimestamp(item.msg.date, datetime.timezone.utc).date()


class Query:
    """A compiled SEARCH: C{matches(item)}; C{needs_raw} says whether items need their bytes."""

    def __init__(self, args, view, charset="UTF-8"):
        self.view = view
        self.charset = charset
        self.depth = 0
        self.needs_raw = False
        self.uses_modseq = False
        self.count = 0
        self._args = list(args)
        self.matches = self._all(self._args)
        if self._args:
            raise ProtocolError("Unexpected search argument")

    def _take(self, args):
        if not args:
            raise ProtocolError("Missing search argument")
        return args.pop(0)

    def _text(self, value):
        """A search string in the declared charset (RFC 3501 6.4.4): bytes that are not valid in it are an error."""
        if isinstance(value, list) or value is None:
            raise ProtocolError("Expected a string")
        try:
            return (value.encode() if isinstance(value, str) else value).decode(CHARSETS[self.charset]).lower()
        except UnicodeError:
            raise ProtocolError("Search string is not valid %s" % (self.charset,)) from None

    def _nested(self, compile_, args):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ProtocolError("Search keys nested too deeply")
        try:
            return compile_(args)
        finally:
            self.depth -= 1

    def _all(self, args):
        tests = [self._one(args)]
        while args:
            tests.append(self._one(args))
        if len(tests) == 1:
            return tests[0]
        return lambda item: all(t(item) for t in tests)

    def _one(self, args):
        self.count += 1
        if self.count > MAX_KEYS:
            raise ProtocolError("Too many search keys")
        key = self._take(args)
        if isinstance(key, list):
            if not key:
                raise ProtocolError("Empty search list")
            return self._nested(self._all, list(key))
        if not isinstance(key, Atom):
            raise ProtocolError("Invalid search key")
        upper = key.upper()
        if upper == "ALL":
            return lambda item: True
        if upper in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[upper]
            return lambda item: (flag in item.flags) == present
        if upper == "NEW":
            return lambda item: "\\Recent" in item.flags and "\\Seen" not in item.flags
        if upper in ("KEYWORD", "UNKEYWORD"):
            flag = self._text(self._take(args))
            present = upper == "KEYWORD"
            return lambda item: any(f.lower() == flag for f in item.flags) == present
        if upper == "NOT":
            inner = self._nested(self._one, args)
            return lambda item: not inner(item)
        if upper == "OR":
            a, b = self._nested(self._one, args), self._nested(self._one, args)
            return lambda item: a(item) or b(item)
        if upper in ("LARGER", "SMALLER"):
            size = parser.number(self._take(args), "size")
            if upper == "LARGER":
                return lambda item: item.msg.size > size
            return lambda item: item.msg.size < size
        if upper in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            when = _date(self._take(args))
            if upper.startswith("SENT"):
                self.needs_raw = True
                get = _sent_date
                upper = upper[4:]
            else:
                get = _internal_date
            if upper == "BEFORE":
                return lambda item: (get(item) or datetime.date.max) < when
            if upper == "ON":
                return lambda item: get(item) == when
            return lambda item: (get(item) or datetime.date.min) >= when
        if upper in ("FROM", "TO", "CC", "BCC"):
            return self._addresses(upper.lower(), self._text(self._take(args)))
        if upper == "SUBJECT":
            return self._header("subject", self._text(self._take(args)))
        if upper == "HEADER":
            name = self._text(self._take(args))
            return self._header(name, self._text(self._take(args)))
        if upper in ("BODY", "TEXT"):
            needle = self._text(self._take(args))
            self.needs_raw = True
            if upper == "BODY":
                return lambda item: needle in item.body().decode("utf-8", "replace").lower()
            return lambda item: needle in item.raw.decode("utf-8", "replace").lower()
        if upper == "UID":
            wanted = set(parser.uid_set(str(self._take(args)), self.view.uids))
            return lambda item: item.uid in wanted
        if upper == "MODSEQ":
            value = self._take(args)
            if isinstance(value, bytes):
                self._take(args)
                value = self._take(args)
            modseq = parser.number(value, "MODSEQ")
            self.uses_modseq = True
            return lambda item: item.msg.modseq >= modseq
        if upper[:1].isdigit() or upper[:1] == "*":
            wanted = set(parser.sequence_set(upper, len(self.view.uids)))
            return lambda item: item.seq in wanted
        raise ProtocolError("Unknown search key %s" % (upper[:30],))

    def _header(self, name, needle):
        self.needs_raw = True
        return lambda item: any(needle in v.lower() for v in item.header().get(name, ())) or (
            needle == "" and name in item.header())


    def _addresses(self, name, needle):
        """The address keys match the addresses, not the header's text (RFC 3501 6.4.4): comments are no part of one."""
        self.needs_raw = True
        return lambda item: any(needle in addresses.search_text(v).lower() for v in item.header().get(name, ()))


def parse(args, view):
    """
    Arguments of SEARCH (after an optional CHARSET) -> L{Query}; raises
    L{ProtocolError}, or L{BadCharset}.  Without CHARSET, strings are
    read as UTF-8, of which RFC 3501's default US-ASCII is a part.
    """
    args = list(args)
    charset = "UTF-8"
    if args and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
        if len(args) < 2 or isinstance(args[1], list):
            raise ProtocolError("Missing charset")
        charset = (args[1].decode("ascii", "replace") if isinstance(args[1], bytes) else str(args[1])).upper()
        if charset not in CHARSETS:
            raise BadCharset()
        args = args[2:]
    if not args:
        raise ProtocolError("Missing search criteria")
    return Query(args, view, charset)


class BadCharset(Exception):
    """A charset we cannot search in: answered C{NO [BADCHARSET (UTF-8 US-ASCII)]} (RFC 5530), not C{BAD}."""
