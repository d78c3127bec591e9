"""
The syntax check of a message's header block at the end of DATA
(RFC 5322 sections 2.2 and 3.2.2).

A header that DKIM verifiers and strict MTAs refuse must be refused while
the client is still there to be told why: accepted, it could only wait in
the queue until it expired and came back days later as a bounce that
named the wrong cause.  So each line up to the first empty one must be a
field (a name of printable characters other than colon, then a colon) or
the continuation of the field above it (white space, then something that
is not only white space).  A body without the empty line in front of it
shows up as a line that is not a field, and is named as such.

The scan is one pass over the header block with C{find}: linear in its
size, no regular expression, nothing kept but the set of field names.
"""

_NAME_CHARS = bytes(c for c in range(0x21, 0x7F) if c != 0x3A)
_WSP = b" \t"
_MAX_QUOTED = 40


class MalformedHeader(Exception):
    """The header block breaks RFC 5322; the text says which line and how."""


def _quoted(line):
    text = line[:_MAX_QUOTED].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(line) > _MAX_QUOTED else ""))


def field_names(message):
    """
    The lower-cased names of the fields in C{message}'s header block.

    @param message: the whole message in canonical form (CRLF line ends).
    @raise MalformedHeader: at the first line that is neither a field nor
        a continuation, or holds a bare CR or LF.
    """
    names = set()
    start = 0
    number = 0
    size = len(message)
    while start < size:
        number += 1
        end = message.find(b"\n", start)
        if end < 0:
            line, start = message[start:], size
        else:
            line, start = message[start:end], end + 1
            if not line.endswith(b"\r"):
                raise MalformedHeader("line %d of the header ends in a bare LF" % (number,))
            line = line[:-1]
        if not line:
            break
        if b"\r" in line:
            raise MalformedHeader("line %d of the header holds a bare CR" % (number,))
        if line[:1] in (b" ", b"\t"):
            if number == 1:
                raise MalformedHeader("the header's first line starts with white space: "
                                      "a field must start with its name")
            if not line.strip(_WSP):
                raise MalformedHeader("line %d of the header holds only white space: the header "
                                      "must end with an empty line" % (number,))
            continue
        colon = line.find(b":")
        name = line[:colon].rstrip(_WSP) if colon > 0 else b""
        if not name or name.translate(None, _NAME_CHARS):
            raise MalformedHeader("line %d of the header is not a field (%s): a field is a name and "
                                  "a colon, and an empty line must come before the body"
                                  % (number, _quoted(line)))
        names.add(name.lower())
    return names
