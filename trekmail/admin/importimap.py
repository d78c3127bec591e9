"""
Reading a mailbox from another IMAP server (RFC 3501), as imapsync does:
every folder, and in each the messages after the last one copied, with
their flags and INTERNALDATE.  Blocking (the standard library's
C{imaplib}); the CLI runs it with no reactor.

Memory stays bounded whatever the mailbox holds: UIDs are read, then
metadata in batches of L{BATCH}, and each message's bytes in pieces of
L{CHUNK} (C{BODY.PEEK[]<offset.length>}), each written out before the
next is asked for.  The connection is TLS, verified against the
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
CHUNK = 1024 * 1024
_FETCH_UID = re.compile(rb"UID (\d{1,10})")
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]{0,65536})\)")
_FETCH_DATE = re.compile(rb'INTERNALDATE "([^"]{1,64})"')
_FETCH_SIZE = re.compile(rb"RFC822\.SIZE (\d{1,12})")
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


class IMAPSource:
    def __init__(self, host, port, user, password, *, insecure=False, timeout=60):
        self.name = "imap:%s@%s:%d" % (user, host, port)
        context = ssl.create_default_context()
        try:
            if port == 993:
                self.imap = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
            else:
                self.imap = imaplib.IMAP4(host, port, timeout=timeout)
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

    def _ok(self, answer, what):
        status, data = answer
        if status != "OK":
            raise SourceError("%s: %s" % (what, data))
        return data

    def folders(self):
        """[(key, hierarchy levels, selectable)], the key being the raw name to SELECT."""
        out = []
        for raw, flags, delimiter in parse_list(self._ok(self.imap.list(), "LIST")):
            text = decode_mutf7(raw.decode("ascii", "replace"))
            parts = text.split(delimiter) if delimiter else [text]
            out.append((raw, parts, b"\\noselect" not in flags and b"\\nonexistent" not in flags))
        return out

    def open(self, key):
        """EXAMINEs the folder (read-only: the source is left as it was); its UIDVALIDITY."""
        self._ok(self.imap.select(_quoted(key), readonly=True), "EXAMINE %r" % (key,))
        validity = self.imap.response("UIDVALIDITY")[1]
        return int(validity[0]) if validity and validity[0] else 0

    def messages(self, key, after):
        """(UID, flags, INTERNALDATE seconds, chunks) for every message with a UID past C{after}, in UID order."""
        found = self._ok(self.imap.uid("SEARCH", "UID %d:*" % (after + 1,)), "UID SEARCH")
        uids = sorted(int(u) for u in b" ".join(w for w in found if w).split() if int(u) > after)
        for start in range(0, len(uids), BATCH):
            batch = uids[start:start + BATCH]
            for uid, flags, date, size in self._metadata(batch):
                yield uid, flags, date, self._body(uid, size)

    def _metadata(self, uids):
        answer = self._ok(self.imap.uid("FETCH", ",".join(map(str, uids)), "(UID FLAGS INTERNALDATE RFC822.SIZE)"),
                          "UID FETCH")
        out = []
        for item in answer:
            line = item[0] if isinstance(item, tuple) else item
            if not line or line == b")":
                continue
            uid, flags, date, size = (_FETCH_UID.search(line), _FETCH_FLAGS.search(line),
                                      _FETCH_DATE.search(line), _FETCH_SIZE.search(line))
            if not (uid and flags and date and size):
                raise SourceError("cannot read the source's FETCH answer %r" % (line[:200],))
            stamp = imaplib.Internaldate2tuple(b'INTERNALDATE "' + date.group(1) + b'"')
            out.append((int(uid.group(1)), flags.group(1).decode("utf-8", "replace").split(),
                        time.mktime(stamp) if stamp else time.time(), int(size.group(1))))
        return sorted(out)

    def _body(self, uid, size):
        offset = 0
        while True:
            answer = self._ok(self.imap.uid("FETCH", str(uid), "(BODY.PEEK[]<%d.%d>)" % (offset, CHUNK)), "UID FETCH")
            pieces = [item[1] for item in answer if isinstance(item, tuple)]
            if not pieces:
                raise SourceError("message UID %d vanished from the source" % (uid,))
            piece = pieces[0]
            yield piece
            offset += len(piece)
            if len(piece) < CHUNK or offset >= size:
                return
