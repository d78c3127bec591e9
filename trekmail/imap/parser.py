"""
IMAP command syntax: framing of lines and literals, and the tokens of a
command.

Twisted's IMAP4Server parser cannot meet the issue: it knows no C{{n+}}
literals (LITERAL+, RFC 7888), cannot refuse an APPEND literal as TOOBIG
before reading it, and has no bound on nesting.  This framer keeps a
bounded buffer, reads literals by count, and can skip an oversized
non-synchronising literal without holding it.  Sequence sets are parsed
here rather than with C{imap4.parseIdList}: clipping each range to the
mailbox as it is read keeps C{1:4294967295} as cheap as the mailbox is
small.
"""

import bisect
import re

MAX_LINE = 64 * 1024
"""Longest command line (without literals) we buffer: RFC 7162 asks for at least 8192."""
MAX_LITERAL = 64 * 1024
"""Largest literal outside APPEND (search strings, passwords)."""
MAX_LITERAL_SIZE = 0xFFFFFFFF
MAX_DEPTH = 8
MAX_PIPELINE = 512 * 1024
"""Bytes of unparsed input held before we stop reading from the client."""

_LITERAL = re.compile(rb"\{(\d{1,20})(\+?)\}\r?$")
_SPACES = re.compile(rb" *")
_TOKEN = re.compile(rb' *+(?:([^ ()"{\[]++(?:\[[^\[\]]*+\][^ ()"{\[]*+)?)(?![\["{])|"([^"\\]*+)"|\()')
"""
The common tokens: an atom, with at most one section in brackets
(C{BODY.PEEK[HEADER.FIELDS (From To)]<0.2>}), a string without escapes,
an opening parenthesis.
"""
_CLOSE = re.compile(rb" *+(\))?")
_ASTRING_ATOM = re.compile(rb' *+([^ ()"{]++)(?!["{])')
"""An astring's atom form, where brackets are characters like any other (RFC 3501 9, C{ASTRING-CHAR})."""
_ATOM = re.compile(rb'[^ ()"{\[]*')
_BRACKETS = re.compile(rb"[\[\]]")
_QUOTED_ESCAPES = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S)
_ESCAPE = re.compile(rb"\\(.)", re.S)


class ProtocolError(Exception):
    """A command that cannot be parsed: answered C{BAD} with this text."""


class Atom(str):
    """An unquoted token; quoted strings and literals are C{bytes}."""


class Framer:
    """
    Splits the byte stream into commands: each a list of segments (the
    line parts as bytes, literals as L{Literal}).  Calls
    C{handler.literal_wanted(first_line, size, synchronising)}, which
    returns C{True} to accept, or C{False} when it has answered already.
    """

    def __init__(self, handler):
        self.handler = handler
        self.buffer = bytearray()
        self.segments = []
        self.want = 0
        self.skip = 0
        self.skipping = False
        self.line_bytes = 0

    def feed(self, data):
        self.buffer += data

    def backlog(self):
        """
        Bytes buffered past the literal being read: what the pipelining
        bound applies to.  The literal itself was accepted at its size
        (APPENDLIMIT for APPEND), so counting it would pause the
        transport until bytes arrive that a paused transport never reads.
        """
        return max(0, len(self.buffer) - self.want)

    def next_command(self):
        """The next complete command's segments, or C{None} if more input is needed."""
        buffer = self.buffer
        while True:
            if self.skip:
                taken = min(self.skip, len(buffer))
                del buffer[:taken]
                self.skip -= taken
                if self.skip:
                    return None
                continue
            if self.want:
                if len(buffer) < self.want:
                    return None
                self.segments.append(Literal(buffer[:self.want]))
                del buffer[:self.want]
                self.want = 0
                continue
            end = buffer.find(b"\n")
            if end == -1:
                if len(buffer) > MAX_LINE:
                    raise LineTooLong()
                return None
            line = bytes(buffer[:end + 1])
            del buffer[:end + 1]
            self.line_bytes += len(line)
            if self.line_bytes > MAX_LINE:
                self.reset()
                raise LineTooLong()
            match = _LITERAL.search(line.rstrip(b"\n")) if line.endswith((b"}\r\n", b"}\n")) else None
            if self.skipping:
                if match and match.group(2):
                    self.skip = int(match.group(1))
                elif not match:
                    self.reset()
                continue
            if match is None:
                self.segments.append(line.rstrip(b"\r\n"))
                command, self.segments, self.line_bytes = self.segments, [], 0
                return command
            size, plus = int(match.group(1)), bool(match.group(2))
            if size > MAX_LITERAL_SIZE:
                first = self.segments[0] if self.segments else line
                self.reset()
                raise BadLiteral(split_tag(first)[0], fatal=plus)
            self.segments.append(line[:match.start()])
            if self.handler.literal_wanted(self.segments[0], size, not plus):
                self.want = size
                if size == 0:
                    self.segments.append(Literal(b""))
                continue
            if not plus:
                self.reset()
                continue
            self.skipping = True
            self.skip = size
            self.segments = []

    def reset(self):
        self.segments = []
        self.skipping = False
        self.line_bytes = 0


class LineTooLong(ProtocolError):
    pass


class BadLiteral(ProtocolError):
    """A literal size no IMAP number can be (RFC 3501 number is 32-bit); C{fatal} if the client sends it anyway."""

    def __init__(self, tag, fatal):
        super().__init__("Invalid literal size")
        self.tag = tag
        self.fatal = fatal


class Literal(bytes):
    pass


def split_tag(line):
    """C{b"a1 UID FETCH ..."} -> (tag, command name upper-cased, rest of the first line)."""
    tag, _, rest = line.partition(b" ")
    name, _, rest = rest.partition(b" ")
    return tag.decode("ascii", "replace"), name.decode("ascii", "replace").upper(), rest


class Reader:
    """
    Tokens of a command's arguments, across line segments and literals.
    Atoms and quoted strings are matched by regular expressions rather
    than a character at a time: tokenizing was the largest single cost of
    the server under imaptest (py-spy).
    """

    def __init__(self, first_rest, segments):
        self.parts = [first_rest] + list(segments[1:])
        self.index = 0
        self.pos = 0

    @property
    def line(self):
        return self.parts[self.index]

    def at_end(self):
        self._skip_space()
        return self.index >= len(self.parts) - 1 and self.pos >= len(self.line)

    def _skip_space(self):
        self.pos = _SPACES.match(self.parts[self.index], self.pos).end()

    def _literal(self):
        if self.index + 1 >= len(self.parts) or not isinstance(self.parts[self.index + 1], Literal):
            raise ProtocolError("Bad literal")
        value = self.parts[self.index + 1]
        self.index += 2
        self.pos = 0
        return bytes(value)

    def token(self, depth=0):
        """One token: L{Atom}, bytes (string/literal) or list; C{None} at the end."""
        line = self.parts[self.index]
        match = _TOKEN.match(line, self.pos)
        if match is None:
            return self._other_token(line)
        kind = match.lastindex
        self.pos = match.end()
        if kind == 1:
            return Atom(match.group(1).decode("utf-8", "replace"))
        if kind == 2:
            return match.group(2)
        if depth >= MAX_DEPTH:
            raise ProtocolError("Lists nested too deeply")
        items = []
        while True:
            line = self.parts[self.index]
            close = _CLOSE.match(line, self.pos)
            self.pos = close.end()
            if close.group(1):
                return items
            if self.pos >= len(line) and self.index + 1 >= len(self.parts):
                raise ProtocolError("Missing ')'")
            items.append(self.token(depth + 1))

    def _other_token(self, line):
        """What L{_TOKEN} leaves: the end of a segment, escapes in a string, an atom with brackets, errors."""
        pos = self.pos = _SPACES.match(line, self.pos).end()
        if pos >= len(line):
            if self.index + 1 < len(self.parts):
                return self._literal()
            return None
        c = line[pos]
        if c == 0x22:  # "
            match = _QUOTED_ESCAPES.match(line, pos)
            if match is None:
                raise ProtocolError("Missing '\"'")
            self.pos = match.end()
            return _ESCAPE.sub(rb"\1", match.group(1))
        if c == 0x29:  # )
            raise ProtocolError("Unexpected ')'")
        end = _ATOM.match(line, pos).end()
        # A "[" opens a section (BODY[HEADER.FIELDS (A B)]) where spaces and parentheses are the atom's own.
        while end < len(line) and line[end] == 0x5B:
            depth = 0
            for bracket in _BRACKETS.finditer(line, end):
                depth += 1 if bracket.group() == b"[" else -1
                if not depth:
                    end = _ATOM.match(line, bracket.end()).end()
                    break
            else:
                raise ProtocolError("Missing ']'")
        if end < len(line) and line[end] in b'"{':
            raise ProtocolError("Bad character in atom")
        self.pos = end
        return Atom(line[pos:end].decode("utf-8", "replace"))

    def astring(self):
        """
        A mailbox name, list pattern or login argument.  Only FETCH's
        section syntax is bracketed, so C{[} here is not the start of one:
        C{SELECT a[b} names the mailbox C{a[b}.
        """
        match = _ASTRING_ATOM.match(self.parts[self.index], self.pos)
        if match is not None:
            self.pos = match.end()
            return match.group(1)
        value = self.token()
        if value is None or isinstance(value, list):
            raise ProtocolError("Missing argument")
        return value.encode() if isinstance(value, str) else value

    def atom(self):
        value = self.token()
        if not isinstance(value, Atom):
            raise ProtocolError("Expected an atom")
        return value

    def rest(self):
        items = []
        while True:
            value = self.token()
            if value is None:
                return items
            items.append(value)


def mailbox_name(value):
    """An astring naming a mailbox: INBOX in any case is INBOX; no empty hierarchy levels."""
    try:
        name = value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("Mailbox name is not UTF-8") from None
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX."):
        name = "INBOX" + name[5:]
    return name


MAX_NAME_BYTES = 254
"""
Longest mailbox name, in the UTF-8 bytes it is stored as: a folder is the
directory C{"." + name} (Maildir++, hierarchy and all), and a directory
name is at most 255 bytes (NAME_MAX), whatever the characters are.
"""
_NUMBER = re.compile(r"[0-9]{1,20}")


def number(value, what):
    """
    An RFC 3501 C{number} (or RFC 7162 C{mod-sequence-value}): ASCII
    digits only, so neither a list nor C{int()}'s other spellings
    (C{"1_0"}, C{" 7"}, Arabic-Indic digits) get through.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        raise ProtocolError("Invalid %s" % (what,))
    return int(value)


def name_fits(name):
    return len(name.encode("utf-8")) <= MAX_NAME_BYTES


def valid_new_name(name):
    return (name and name_fits(name) and not name.startswith(".") and not name.endswith(".")
            and ".." not in name and "/" not in name and "\0" not in name and not name.startswith("~")
            and all(ord(c) >= 0x20 for c in name) and not any(c in name for c in "*%"))


def _ranges(text, largest, what):
    """
    The C{(low, high, words)} of each comma-separated item of a set, with
    C{*} read as C{largest}; C{words} are the item's own
    C{(low, colon, high)}, for checks that depend on whether C{*} was
    written.
    """
    if not text:
        raise ProtocolError("Empty sequence set")
    out = []
    for item in text.split(","):
        low, colon, high = words = item.partition(":")
        try:
            a = largest if low == "*" else int(low)
            b = (largest if high == "*" else int(high)) if colon else a
        except ValueError:
            raise ProtocolError("Invalid %s" % (what,)) from None
        out.append((a, b, words))
    return out


def sequence_set(text, largest):
    """
    C{"1:3,7,9:*"} -> sorted list of numbers up to C{largest}; C{*} is
    C{largest}.  Ranges are clipped to what exists, so C{1:4294967295}
    costs no more than the mailbox size.
    """
    return [n for start, stop in _sequence_spans(text, largest) for n in range(start, stop)]


def sequence_members(text, items):
    """
    The members of C{items} (a view's UIDs) at a sequence set's
    positions, in order.  Unlike a SEARCH key, a FETCH or STORE set may
    not name a message beyond the last (RFC 3501 6.4.5): that is an error.
    """
    spans = _sequence_spans(text, len(items), strict=True)
    if len(spans) == 1:
        return items[spans[0][0] - 1:spans[0][1] - 1]
    return [item for start, stop in spans for item in items[start - 1:stop - 1]]


def _sequence_spans(text, largest, strict=False):
    spans = []
    for a, b, (low, colon, high) in _ranges(text, largest, "sequence set"):
        if a <= 0 and low != "*" or b <= 0 and high != "*" and colon:
            raise ProtocolError("Invalid sequence set")
        if a > b:
            a, b = b, a
        if b > 0xFFFFFFFF:
            raise ProtocolError("Invalid sequence set")
        if strict and b > largest:
            raise ProtocolError("Invalid message sequence number")
        spans.append((max(a, 1), min(b, largest) + 1))
    if len(spans) == 1:
        return spans if spans[0][0] < spans[0][1] else []
    return merged_spans(spans)


def uid_set(text, uids):
    """UIDs of the view matching a UID set (C{uids} sorted; C{*} is the largest UID)."""
    spans = merged_spans(_uid_spans(text, uids))
    if len(spans) == 1:
        return uids[spans[0][0]:spans[0][1]]
    return [uid for start, stop in spans for uid in uids[start:stop]]


def _uid_spans(text, uids):
    for a, b, _ in _ranges(text, uids[-1] if uids else 0, "UID set"):
        if a > b:
            a, b = b, a
        if a < 0 or b > 0xFFFFFFFF:
            raise ProtocolError("Invalid UID set")
        yield bisect.bisect_left(uids, a), bisect.bisect_right(uids, b)


def merged_spans(spans):
    """
    The C{(start, stop)} spans, sorted and with overlaps merged, so that a
    set repeating C{1:*} thousands of times costs a sort of its items
    plus one pass over the mailbox, not one pass per item.
    """
    merged = []
    for start, stop in sorted(spans):
        if start >= stop:
            continue
        if merged and start <= merged[-1][1]:
            if stop > merged[-1][1]:
                merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged
