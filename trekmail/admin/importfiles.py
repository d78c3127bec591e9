"""
Reading mail from disk for an import: a Maildir (Maildir++ folders, as
Dovecot and Courier write them) or an mbox file.

A message is read and handed on in pieces, never whole.  Its lines end
in CRLF in the copy, as IMAP carries a message (RFC 3501 2.3.1): Maildir
and mbox files on Unix end them in LF; otherwise the bytes are the
source's own (an mbox's C{>From } quoting of the mboxrd form is undone).
Flags come from the Maildir file name's info part (and Dovecot's
C{dovecot-keywords}), or from an mbox message's C{Status}, C{X-Status}
and C{X-Keywords} headers; INTERNALDATE from the file's mtime, or the
mbox C{From } line (None when it states none: the import's clock then
decides, in L{trekmail.admin.importtarget.Mailbox.add}).

Neither format numbers its messages, so the position an import resumes
after is the message's place in a stable order: Maildir file names
sorted as delivered, mbox messages in file order.  A source changed
between two runs other than by growing may have messages copied twice
or missed.
"""

import calendar
import os
import re
import time

from trekmail.imap.index import arrival_order

CHUNK = 64 * 1024
HEADER_LIMIT = 256 * 1024
"""The most of an mbox message's header kept in memory to read its flags."""
_INFO_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
_X_STATUS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
_FROM_QUOTED = re.compile(rb">+From ")


def crlf(chunks):
    """LF line ends as CRLF, across chunk boundaries; CRLF stays as it is."""
    previous = b""
    for chunk in chunks:
        if not chunk:
            continue
        fixed = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if previous == b"\r" and chunk.startswith(b"\n"):
            fixed = fixed[1:]
        previous = chunk[-1:]
        yield fixed


def _file_chunks(path):
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk


class MaildirSource:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        if not os.path.isdir(os.path.join(self.path, "cur")):
            raise ValueError("%s is not a Maildir (no cur/)" % (path,))
        self.name = "maildir:" + self.path

    def close(self):
        pass

    def folders(self):
        out = [("", ["INBOX"], True)]
        for entry in sorted(os.listdir(self.path)):
            if entry.startswith(".") and entry not in (".", "..") and os.path.isdir(os.path.join(self.path, entry, "cur")):
                out.append((entry, entry[1:].split("."), True))
        return out

    def open(self, key):
        return ""

    def _keywords(self, directory):
        names = {}
        try:
            with open(os.path.join(directory, "dovecot-keywords"), encoding="utf-8", errors="replace") as f:
                for line in f:
                    number, _, name = line.strip().partition(" ")
                    if number.isdigit() and int(number) < 26 and name:
                        names[chr(ord("a") + int(number))] = name
        except FileNotFoundError:
            pass
        return names

    def messages(self, key, after):
        directory = os.path.join(self.path, key)
        keywords = self._keywords(directory)
        entries = []
        for sub in ("new", "cur"):
            for entry in os.listdir(os.path.join(directory, sub)):
                if not entry.startswith("."):
                    entries.append((arrival_order(entry.split(":", 1)[0]), sub, entry))
        entries.sort()
        for position, (_, sub, entry) in enumerate(entries, 1):
            if position <= after:
                continue
            path = os.path.join(directory, sub, entry)
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            info = entry.split(":2,", 1)[1] if ":2," in entry else ""
            flags = [_INFO_FLAGS[c] for c in info if c in _INFO_FLAGS] + [keywords[c] for c in info if c in keywords]
            yield position, flags, mtime, crlf(_file_chunks(path))


def _from_line_date(line):
    """The date at the end of an mbox C{From } line (asctime form), or None."""
    words = line.decode("ascii", "replace").split()
    try:
        return calendar.timegm(time.strptime(" ".join(words[-5:]), "%a %b %d %H:%M:%S %Y"))
    except ValueError:
        return None


def _mbox_flags(header):
    flags = []
    for line in header.split(b"\n"):
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.decode("utf-8", "replace").strip()
        if name == b"status" and "R" in value:
            flags.append("\\Seen")
        elif name == b"x-status":
            flags += [_X_STATUS[c] for c in value if c in _X_STATUS]
        elif name == b"x-keywords":
            flags += [w for w in value.replace(",", " ").split() if w]
    return flags


def _separator(line):
    """Whether C{line} (a L{_Lines} piece) starts a message: a C{From } at the start of a line, not inside one."""
    piece, begins = line
    return begins and piece.startswith(b"From ")


def _blank(line):
    piece, begins = line
    return begins and piece in (b"\n", b"\r\n")


class _Lines:
    """
    An mbox file's lines in pieces of at most L{CHUNK} bytes, each as
    C{(bytes, begins)}: C{begins} is false for the rest of a line longer
    than a piece, so its text is never taken for a C{From } separator or a
    blank line, and every reader (copy, skip on resume) counts the same
    messages.
    """

    def __init__(self, f):
        self.f = f
        self.begins = True

    def read(self):
        piece = self.f.readline(CHUNK)
        line = (piece, self.begins)
        self.begins = piece.endswith(b"\n")
        return line


class MboxSource:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        if not os.path.isfile(self.path):
            raise ValueError("%s is not a file" % (path,))
        self.name = "mbox:" + self.path

    def close(self):
        pass

    def folders(self):
        return [("", ["INBOX"], True)]

    def open(self, key):
        return ""

    def messages(self, key, after):
        with open(self.path, "rb") as f:
            lines = _Lines(f)
            position = 0
            line = lines.read()
            while line[0]:
                if not _separator(line):
                    line = lines.read()
                    continue
                position += 1
                date = _from_line_date(line[0])
                header, line = self._header(lines)
                if position <= after:
                    line = _skip(lines, line)
                    continue
                reader = _Body(lines, line)
                yield position, _mbox_flags(header), date, crlf(reader.chunks(header))
                line = reader.rest()

    def _header(self, lines):
        """The header (up to L{HEADER_LIMIT} bytes kept) and the first piece after it."""
        pieces, size = [], 0
        line = lines.read()
        while line[0] and not _blank(line) and not _separator(line) and size <= HEADER_LIMIT:
            pieces.append(line[0])
            size += len(line[0])
            line = lines.read()
        return b"".join(pieces), line


def _skip(lines, line):
    """The next separator from C{line} on (or the end)."""
    while line[0] and not _separator(line):
        line = lines.read()
    return line


class _Body:
    """The rest of one mbox message, piece by piece up to the next C{From } line, unquoting C{>From }."""

    def __init__(self, lines, line):
        self.lines = lines
        self.line = line

    def chunks(self, header):
        yield header
        pending = []
        size = 0
        blank = b""
        while self.line[0] and not _separator(self.line):
            piece, begins = self.line
            if begins and _FROM_QUOTED.match(piece):
                piece = piece[1:]
            is_blank = _blank(self.line)
            self.line = self.lines.read()
            if blank:
                pending.append(blank)
                size += len(blank)
                blank = b""
            if is_blank and (not self.line[0] or _separator(self.line)):
                blank = piece
                continue
            pending.append(piece)
            size += len(piece)
            if size >= CHUNK:
                yield b"".join(pending)
                pending, size = [], 0
        if pending:
            yield b"".join(pending)

    def rest(self):
        self.line = _skip(self.lines, self.line)
        return self.line
