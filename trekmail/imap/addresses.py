"""
Address lists of message headers (From, To, Cc, ...; RFC 5322 3.4 and its
obsolete forms of 4.4), as ENVELOPE (RFC 3501 7.4.2) and the address
SEARCH keys (6.4.4) see them.

C{email.utils.getaddresses} flattens groups (their start and end markers
are part of the ENVELOPE), drops source routes and takes a comment inside
an address for its display name; this parser keeps all three right.  It
reads each character once: tokens are matched by regular expressions with
no alternative that can backtrack, comments by counting parentheses, and
the addresses of one field stop at L{MAX_ADDRESSES}.
"""

import re

MAX_ADDRESSES = 2000
"""Addresses (group markers included) read from one field: a header cannot make ENVELOPE or SEARCH unbounded."""

_TOKEN = re.compile(
    r'\s*+(?:([^()<>@,;:\\".\[\]\s]++)|"((?:[^"\\]|\\.)*+)"?|(\[(?:[^\[\]\\]|\\.)*+\]?)|([()<>@,;:.\\\]]))', re.S)
"""After white space: an atom, a quoted string, a domain literal or one special character (RFC 5322 3.2.3)."""
_COMMENT_MARK = re.compile(r"[()\\]")
_ESCAPE = re.compile(r"\\(.)", re.S)
_SIMPLE_ATEXT = r"[^()<>@,:;.\"\[\]\\\s]+"
_SIMPLE_DOT_ATOM = _SIMPLE_ATEXT + r"(?:\." + _SIMPLE_ATEXT + r")*"
_SIMPLE = re.compile(
    r'[ \t]*(?:({0})@({0})|(?:"([^"\\\r\n]*)"|([^()<>@,:;"\[\]\\\s]+(?:[ \t]+[^()<>@,:;"\[\]\\\s]+)*))'
    r'[ \t]*<({0})@({0})>)[ \t]*'.format(_SIMPLE_DOT_ATOM))
"""
One address in the forms nearly all mail uses: C{a@b.example}, C{Name
<a@b.example>}, C{"Name, Jr." <a@b.example>}.  The full parser costs a
Python step per token; anything else (comments, groups, escapes, quoted
local parts, routes, domain literals) still goes to it.
"""

WORD, QUOTED, LITERAL, SPECIAL = range(4)


class Mailbox:
    """One address: C{route} is RFC 3501's source route (C{"@a,@b"}), C{domain} C{None} when there is no C{@}."""

    __slots__ = ("name", "route", "local", "domain")

    def __init__(self, name, route, local, domain):
        self.name, self.route, self.local, self.domain = name, route, local, domain


class GroupStart:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class GroupEnd:
    __slots__ = ()


GROUP_END = GroupEnd()


def _comment_end(value, start):
    """Offset past the comment opening at C{start} (nested comments and quoted pairs included), or the end."""
    depth = 0
    position = start
    while True:
        mark = _COMMENT_MARK.search(value, position)
        if mark is None:
            return len(value)
        char = mark.group()
        position = mark.end()
        if char == "\\":
            position += 1
        elif char == "(":
            depth += 1
        else:
            depth -= 1
            if not depth:
                return position


def _tokens(value):
    """C{(kind, text, spaced)} per token, with C{kind} C{None} for a comment; C{spaced}: white space came before."""
    position = 0
    while position < len(value):
        match = _TOKEN.match(value, position)
        if match is None:
            return
        kind = match.lastindex - 1
        spaced = match.start(match.lastindex) > match.start()
        text = match.group(match.lastindex)
        position = match.end()
        if kind == SPECIAL and text == "(":
            end = _comment_end(value, match.start(match.lastindex))
            yield None, value[match.start(match.lastindex) + 1:end - 1].strip(), spaced
            position = end
        elif kind == QUOTED:
            yield kind, _ESCAPE.sub(r"\1", text), spaced
        else:
            yield kind, text, spaced


def _join(tokens, spaced):
    """The tokens' text: with one space wherever white space was (a phrase), or none (the parts of an address)."""
    out = []
    for _, text, space in tokens:
        if out and space and spaced:
            out.append(" ")
        out.append(text)
    return "".join(out)


def _addr_spec(tokens):
    """C{(local, domain)} of the tokens of C{local@domain}; the domain is C{None} without an C{@}."""
    at = None
    for index, (kind, text, _) in enumerate(tokens):
        if kind == SPECIAL and text == "@":
            at = index
    if at is None:
        return _join(tokens, True), None
    return _join(tokens[:at], False), _join(tokens[at + 1:], False)


def _angle_addr(name, tokens):
    """The L{Mailbox} of C{name <[@route,@route:]local@domain>} (RFC 5322 obs-angle-addr for the route)."""
    route = None
    if tokens and tokens[0][0] == SPECIAL and tokens[0][1] == "@":
        for index, (kind, text, _) in enumerate(tokens):
            if kind == SPECIAL and text == ":":
                route, tokens = _join(tokens[:index], False), tokens[index + 1:]
                break
    local, domain = _addr_spec(tokens)
    return Mailbox(name, route, local, domain)


def _simple(value):
    """The L{Mailbox}es of a list of L{_SIMPLE} forms, or C{None} if it is not one."""
    out = []
    position = 0
    while True:
        match = _SIMPLE.match(value, position)
        if match is None:
            return None
        bare_local, bare_domain, quoted, words, local, domain = match.groups()
        if bare_local is not None:
            out.append(Mailbox(None, None, bare_local, bare_domain))
        else:
            out.append(Mailbox((quoted if quoted is not None else " ".join(words.split())) or None, None, local, domain))
        position = match.end()
        if position == len(value) or len(out) >= MAX_ADDRESSES:
            return out
        if value[position] != ",":
            return None
        position += 1


class _Reader:
    """The state of one pass over a field's tokens: the address being read and whether a group is open."""

    def __init__(self):
        self.out = []
        self.words = []
        self.angle = None
        self.angle_closed = False
        self.comment = None
        self.group = False

    def flush(self):
        if self.angle is not None:
            self.out.append(_angle_addr(_join(self.words, True) or None, self.angle))
        elif self.words:
            local, domain = _addr_spec(self.words)
            # A bare addr-spec's comment is its only name (C{user@domain (Real Name)}), as Dovecot reads it.
            self.out.append(Mailbox(self.comment or None, None, local, domain))
        self.words, self.angle, self.angle_closed, self.comment = [], None, False, None

    def token(self, token):
        kind, text = token[0], token[1]
        if kind is None:
            if self.angle is None:
                self.comment = text
        elif self.angle is not None and not self.angle_closed:
            if kind == SPECIAL and text == ">":
                self.angle_closed = True
            else:
                self.angle.append(token)
        elif kind != SPECIAL or text in ".@":
            if not self.angle_closed:
                self.words.append(token)
        elif text == ",":
            self.flush()
        elif text == ";":
            self.flush()
            if self.group:
                self.out.append(GROUP_END)
                self.group = False
        elif text == ":" and not self.group and self.angle is None:
            self.out.append(GroupStart(_join(self.words, True)))
            self.words, self.comment, self.group = [], None, True
        elif text == "<" and self.angle is None:
            self.angle = []


def parse(value):
    """The L{Mailbox}es, L{GroupStart}s and L{GroupEnd}s of one field's value, at most L{MAX_ADDRESSES}."""
    simple = _simple(value)
    if simple is not None:
        return simple
    reader = _Reader()
    for token in _tokens(value):
        reader.token(token)
        if len(reader.out) >= MAX_ADDRESSES:
            return reader.out[:MAX_ADDRESSES]
    reader.flush()
    if reader.group:
        reader.out.append(GROUP_END)
    return [item for item in reader.out[:MAX_ADDRESSES]
            if not isinstance(item, Mailbox) or item.local or item.name or item.domain]


def search_text(value):
    """
    What FROM, TO, CC and BCC search in (RFC 3501 6.4.4): each address as
    C{Name <local@domain>}, groups as C{name: ...;}, comments left out,
    so a search finds an address however the header wrote it.
    """
    out = []
    separator = ""
    for item in parse(value):
        if isinstance(item, GroupStart):
            out.append(separator + item.name + ":")
            separator = " "
            continue
        if isinstance(item, GroupEnd):
            out.append(";")
        else:
            address = item.local if item.domain is None else item.local + "@" + item.domain
            out.append(separator + ("%s <%s>" % (item.name, address) if item.name else address))
        separator = ", "
    return "".join(out)
