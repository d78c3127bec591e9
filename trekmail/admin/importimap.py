"""
Reading a mailbox from another IMAP server (RFC 3501), as imapsync does:
every folder, and in each the messages after the last one copied, with
their flags and INTERNALDATE.  Blocking (the standard library's
C{imaplib}); the CLI runs it with no reactor.

Memory stays bounded whatever the mailbox holds: UIDs are read L{WINDOW}
messages at a time (one C{UID SEARCH} answer is one line, and imaplib
refuses a line over a megabyte), then metadata in batches of L{BATCH},
and each message's bytes in pieces of L{CHUNK} (C{BODY.PEEK[]<offset.length>}),
each written out before the next is asked for; the message ends at the
first short piece, whatever size the server stated.  imaplib reads a
literal whole, of the size the server names: L{BoundedIMAP4} refuses one
much larger than a piece.  The connection is TLS, verified against the
system's trust store: implicit on port 993, else STARTTLS, which must be
offered unless the operator said C{--insecure}.
"""

import base64
import binascii
import imaplib
import re
import ssl
import time

from trekmail.realm.errors import InvalidInput

BATCH = 200
WINDOW = 20000
"""Messages whose UIDs one C{UID SEARCH} asks for: 20000 UIDs of ten digits are a 220 KB answer line."""
CHUNK = 1024 * 1024
LITERAL_MARGIN = 64 * 1024
"""How much larger than a piece asked for a literal may be before the source is taken to be hostile."""
_FETCH_UID = re.compile(rb"UID (\d{1,10})")
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]{0,65536})\)")
_FETCH_DATE = re.compile(rb'INTERNALDATE "([^"]{1,64})"')
_LIST = re.compile(rb'\(([^)]{0,1024})\) (NIL|"(?:[^"\\]|\\.){1,2}") (.{1,4096})$')


class SourceError(InvalidInput):
    """The source server refused or misbehaved: the import stops, what it copied stays."""


def decode_mutf7(name):
    """A modified UTF-7 mailbox name (RFC 3501 5.1.3) as text."""
    out, i = [], 0
    if "&" not in name:
        return name
    while i < len(name):
        if name[i] == "&":
            end = name.find("-", i)
            if end < 0:
                raise SourceError("malformed mailbox name %r" % (name,))
            if end == i + 1:
                out.append("&")
            else:
                b64 = name[i + 1:end].replace(",", "/")
                try:
                    out.append(base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be", "replace"))
                except binascii.Error:
                    raise SourceError("malformed mailbox name %r" % (name,)) from None
            i = end + 1
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _unquote(word):
    if word.startswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", word[1:-1])
    return word


def parse_list(lines):
    """C{LIST} answers as imaplib gives them: [(raw name, flags, delimiter or None)]."""
    out = []
    items = iter(lines)
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple):
            head, literal = item
            match = _LIST.match(head.rstrip() + b" X")
            name = literal
        else:
            match = _LIST.match(item)
            name = None
        if match is None:
            raise SourceError("cannot read the source's LIST answer %r" % (item[:200],))
        if name is None:
            name = _unquote(match.group(3))
        delimiter = None if match.group(2) == b"NIL" else _unquote(match.group(2)).decode()
        out.append((name, match.group(1).lower().split(), delimiter))
    return out


def _quoted(raw):
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class _BoundedLiterals:
    """imaplib allocates whatever literal size the server announces; this caps it."""

    max_literal = CHUNK + LITERAL_MARGIN

    def read(self, size):
        if size > self.max_literal:
            raise self.abort("the source announced a %d-byte literal; at most %d were asked for"
                             % (size, self.max_literal))
        return super().read(size)


class BoundedIMAP4(_BoundedLiterals, imaplib.IMAP4):
    pass


class BoundedIMAP4_SSL(_BoundedLiterals, imaplib.IMAP4_SSL):
    pass


class IMAPSource:
    def __init__(self, host, port, user, password, *, insecure=False, timeout=60):
        self.name = "imap:%s@%s:%d" % (user, host, port)
        context = ssl.create_default_context()
        try:
            if port == 993:
                self.imap = BoundedIMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
            else:
                self.imap = BoundedIMAP4(host, port, timeout=timeout)
                if "STARTTLS" in self.imap.capabilities:
                    self.imap.starttls(context)
                elif not insecure:
                    raise SourceError("%s:%d offers no STARTTLS: the password would cross the network in clear"
                                      " (--insecure allows it)" % (host, port))
            self.imap.login(user, password)
        except (OSError, imaplib.IMAP4.error) as e:
            raise SourceError("cannot log in to %s:%d: %s" % (host, port, e)) from None

    def close(self):
        try:
            self.imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass

    def _ask(self, what, command, *args, **kwargs):
        """One imaplib command's data; the source's refusal, or imaplib's error or timeout, as L{SourceError}."""
        try:
            status, data = getattr(self.imap, command)(*args, **kwargs)
        except (OSError, imaplib.IMAP4.error) as e:
            raise SourceError("%s: %s" % (what, e)) from None
        if status != "OK":
            raise SourceError("%s: %s" % (what, data))
        return data

    def folders(self):
        """[(key, hierarchy levels, selectable)], the key being the raw name to SELECT."""
        out = []
        for raw, flags, delimiter in parse_list(self._ask("LIST", "list")):
            text = decode_mutf7(raw.decode("ascii", "replace"))
            parts = text.split(delimiter) if delimiter else [text]
            out.append((raw, parts, b"\\noselect" not in flags and b"\\nonexistent" not in flags))
        return out

    def open(self, key):
        """EXAMINEs the folder (read-only: the source is left as it was); its UIDVALIDITY."""
        exists = self._ask("EXAMINE %r" % (key,), "select", _quoted(key), readonly=True)
        self.exists = int(exists[0]) if exists and exists[0] and exists[0].isdigit() else 0
        validity = self.imap.response("UIDVALIDITY")[1]
        return int(validity[0]) if validity and validity[0] else 0

    def messages(self, key, after):
        """
        (UID, flags, INTERNALDATE seconds or None when the source's is
        unreadable, chunks) for every message of the folder L{open}
        examined with a UID past C{after}, in UID order.
        """
        for first in range(1, self.exists + 1, WINDOW):
            last = min(first + WINDOW - 1, self.exists)
            found = self._ask("UID SEARCH", "uid", "SEARCH", "%d:%d UID %d:*" % (first, last, after + 1))
            uids = sorted(int(u) for u in b" ".join(w for w in found if w).split() if int(u) > after)
            for start in range(0, len(uids), BATCH):
                for uid, flags, date in self._metadata(uids[start:start + BATCH]):
                    yield uid, flags, date, self._body(uid)

    def _metadata(self, uids):
        answer = self._ask("UID FETCH", "uid", "FETCH", ",".join(map(str, uids)), "(UID FLAGS INTERNALDATE)")
        out = []
        for item in answer:
            line = item[0] if isinstance(item, tuple) else item
            if not line or line == b")":
                continue
            uid, flags, date = _FETCH_UID.search(line), _FETCH_FLAGS.search(line), _FETCH_DATE.search(line)
            if not (uid and flags and date):
                raise SourceError("cannot read the source's FETCH answer %r" % (line[:200],))
            stamp = imaplib.Internaldate2tuple(b'INTERNALDATE "' + date.group(1) + b'"')
            out.append((int(uid.group(1)), flags.group(1).decode("utf-8", "replace").split(),
                        time.mktime(stamp) if stamp else None))
        return sorted(out)

    def _body(self, uid):
        """The message's pieces, up to the first short one: the size a server states may be wrong."""
        offset = 0
        while True:
            answer = self._ask("UID FETCH", "uid", "FETCH", str(uid), "(BODY.PEEK[]<%d.%d>)" % (offset, CHUNK))
            pieces = [item[1] for item in answer if isinstance(item, tuple)]
            if not pieces:
                if offset and any(isinstance(item, bytes) and b"BODY[]" in item for item in answer):
                    return
                raise SourceError("message UID %d vanished from the source" % (uid,))
            piece = pieces[0]
            if piece:
                yield piece
            offset += len(piece)
            if len(piece) < CHUNK:
                return
