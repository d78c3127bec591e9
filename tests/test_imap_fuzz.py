"""
A grammar fuzzer of IMAP commands: random but grammar-shaped LIST
patterns, SEARCH keys with nesting, FETCH sections and modifiers, STORE,
APPEND with literals, mailbox commands and byte-level mutations of them,
driven through a logged-in session on a StringTransport against a real
store (L{tests.imap_inline}).  Every command must get exactly one tagged
reply, never C{SERVERBUG} (an internal error also fails the test through
its logged traceback), within a time budget.  Seeded: a failure names its
seed and command, and C{TREKMAIL_FUZZ_SEED} replays it.
"""

import os
import random
import time

from twisted.trial import unittest

from tests.imap_inline import Session

SEED = int(os.environ.get("TREKMAIL_FUZZ_SEED", "19"))
COMMANDS = 2000
SECONDS_PER_COMMAND = 0.5
_MESSAGES = [
    b"From: a@example.com\r\nSubject: one\r\n\r\nbody\r\n",
    b"Subject: two\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\n"
    b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ny\r\n--b--\r\n",
    b"Subject: caf\xc3\xa9\r\n\r\n\xff\xfe\r\n",
]
_NAMES = [b"INBOX", b"Sent", b"a", b"a.b", b"a.b.c", b"\"x y\"", b"\"\"", b"Trash", b"&AOk-", b"\"caf\xc3\xa9\"",
          b"a..b", b".a", b"a.", b"*", b"%", b"INBOX.sub", b"\"" + b"x" * 260 + b"\""]
_FLAGS = [b"\\Seen", b"\\Deleted", b"\\Flagged", b"\\Answered", b"\\Draft", b"$Work", b"\\Recent", b"\\Bogus",
          b"k", b"(", b"\\"]


class Grammar:
    def __init__(self, rng):
        self.rng = rng

    def pick(self, items):
        return self.rng.choice(items)

    def number(self):
        return self.pick([b"0", b"1", b"2", b"3", b"4294967295", b"4294967296", b"99999999999999999999",
                          b"-1", b"1_0", b"x"])

    def sequence(self):
        parts = []
        for _ in range(self.rng.randint(1, 4)):
            a = self.pick([b"1", b"2", b"*", b"3", b"0", b"4294967295", b"99"])
            parts.append(a + (b":" + self.pick([b"*", b"1", b"5", b"4294967295"]) if self.rng.random() < 0.5 else b""))
        return b",".join(parts) if self.rng.random() < 0.95 else self.pick([b"", b",", b"1:", b":", b"$"])

    def string(self):
        text = self.pick([b"one", b"", b"caf\xc3\xa9", b"\xff", b"a b", b"x" * 50, b"\\", b"\"", b"()"])
        form = self.rng.random()
        if form < 0.4 and b"\"" not in text and b"\\" not in text:
            return b'"' + text + b'"'
        if form < 0.7:
            return b"{%d+}\r\n%s" % (len(text), text)
        if form < 0.8:
            return b"{%d}\r\n%s" % (len(text), text)
        return text if text and b" " not in text and b"(" not in text else b"x"

    def search_key(self, depth=0):
        rng = self.rng
        roll = rng.random()
        if depth < 150 and roll < 0.15:
            return b"NOT " + self.search_key(depth + 1)
        if depth < 150 and roll < 0.25:
            return b"OR " + self.search_key(depth + 1) + b" " + self.search_key(depth + 1)
        if depth < 12 and roll < 0.32:
            return b"(" + b" ".join(self.search_key(depth + 1) for _ in range(rng.randint(0, 3))) + b")"
        key = self.pick([b"ALL", b"SEEN", b"UNSEEN", b"NEW", b"OLD", b"RECENT", b"DELETED", b"ANSWERED",
                         b"KEYWORD", b"UNKEYWORD", b"LARGER", b"SMALLER", b"SINCE", b"BEFORE", b"ON", b"SENTON",
                         b"SENTSINCE", b"FROM", b"TO", b"SUBJECT", b"BODY", b"TEXT", b"HEADER", b"UID",
                         b"MODSEQ", b"BOGUS", b"1:*", b"*"])
        if key in (b"KEYWORD", b"UNKEYWORD"):
            return key + b" " + self.pick(_FLAGS)
        if key in (b"LARGER", b"SMALLER"):
            return key + b" " + self.number()
        if key in (b"SINCE", b"BEFORE", b"ON", b"SENTON", b"SENTSINCE"):
            return key + b" " + self.pick([b"1-Jan-2020", b"31-Feb-2020", b"x", b"1-Foo-2020", b"\"2-Mar-2021\""])
        if key in (b"FROM", b"TO", b"SUBJECT", b"BODY", b"TEXT"):
            return key + b" " + self.string()
        if key == b"HEADER":
            return key + b" " + self.string() + b" " + self.string()
        if key == b"UID":
            return key + b" " + self.sequence()
        if key == b"MODSEQ":
            return key + b" " + self.pick([b"", b"\"/flags/\\\\seen\" all "]) + self.pick(
                [self.number(), b"(1)"])
        return key

    def search(self):
        charset = b""
        if self.rng.random() < 0.2:
            charset = b"CHARSET " + self.pick([b"UTF-8", b"US-ASCII", b"KOI8-R", b"\"\xff\"", b"(x)"]) + b" "
        keys = b" ".join(self.search_key() for _ in range(self.rng.randint(1, 3)))
        return self.pick([b"SEARCH ", b"UID SEARCH "]) + charset + keys

    def section(self):
        path = b".".join(self.pick([b"1", b"2", b"3", b"0", b"99"]) for _ in range(self.rng.randint(0, 3)))
        text = self.pick([b"", b"HEADER", b"TEXT", b"MIME", b"HEADER.FIELDS (Subject From)",
                          b"HEADER.FIELDS.NOT (To)", b"HEADER.FIELDS ()", b"BOGUS"])
        inner = path + (b"." if path and text else b"") + text
        partial = self.pick([b"", b"", b"<0.10>", b"<5.0>", b"<4294967295.1>", b"<x>"])
        return self.pick([b"BODY", b"BODY.PEEK", b"BINARY", b"RFC822"]) + b"[" + inner + b"]" + partial

    def fetch(self):
        items = [self.pick([b"FLAGS", b"UID", b"ENVELOPE", b"BODYSTRUCTURE", b"BODY", b"RFC822.SIZE",
                            b"INTERNALDATE", b"MODSEQ", b"ALL", b"FAST", b"FULL", b"RFC822.HEADER", b"BOGUS",
                            self.section(), self.section()]) for _ in range(self.rng.randint(1, 5))]
        body = b"(" + b" ".join(items) + b")" if len(items) > 1 or self.rng.random() < 0.5 else items[0]
        modifier = b""
        if self.rng.random() < 0.15:
            modifier = b" (CHANGEDSINCE " + self.pick([self.number(), b"(1)", b""]) + b")"
        return self.pick([b"FETCH ", b"UID FETCH "]) + self.sequence() + b" " + body + modifier

    def store(self):
        modifier = b""
        if self.rng.random() < 0.2:
            modifier = b"(UNCHANGEDSINCE " + self.pick([self.number(), b"(1)"]) + b") "
        flags = b" ".join(self.pick(_FLAGS) for _ in range(self.rng.randint(0, 3)))
        item = self.pick([b"FLAGS", b"+FLAGS", b"-FLAGS.SILENT", b"+FLAGS.SILENT", b"BOGUS"])
        return (self.pick([b"STORE ", b"UID STORE "]) + self.sequence() + b" " + modifier + item + b" "
                + (b"(" + flags + b")" if self.rng.random() < 0.7 else flags))

    def pattern(self):
        return b"".join(self.pick([b"*", b"%", b"a", b".", b"INBOX", b"x"]) for _ in range(self.rng.randint(0, 30)))

    def command(self):
        rng = self.rng
        kind = rng.random()
        if kind < 0.25:
            return self.search()
        if kind < 0.45:
            return self.fetch()
        if kind < 0.55:
            return self.store()
        if kind < 0.62:
            return self.pick([b"LIST ", b"LSUB "]) + self.pick([b"\"\" ", b"a ", b"\"a.\" "]) + \
                b'"' + self.pattern() + b'"'
        if kind < 0.66:
            raw = self.pick(_MESSAGES)
            return b"APPEND " + self.pick(_NAMES) + self.pick([b"", b" (\\Seen)", b" (\\Bogus)"]) + \
                self.pick([b"", b' "1-Jan-2020 10:00:00 +0000"', b' "x"']) + b" {%d+}\r\n%s" % (len(raw), raw)
        if kind < 0.75:
            verb = self.pick([b"CREATE", b"DELETE", b"SUBSCRIBE", b"UNSUBSCRIBE", b"SELECT", b"EXAMINE"])
            return verb + b" " + self.pick(_NAMES)
        if kind < 0.8:
            return b"RENAME " + self.pick(_NAMES) + b" " + self.pick(_NAMES)
        if kind < 0.84:
            return b"STATUS " + self.pick(_NAMES) + b" " + self.pick(
                [b"(MESSAGES UIDNEXT)", b"(UNSEEN HIGHESTMODSEQ RECENT UIDVALIDITY)", b"()", b"(BOGUS)", b""])
        if kind < 0.9:
            return self.pick([b"COPY ", b"MOVE ", b"UID COPY ", b"UID MOVE "]) + self.sequence() + b" " + \
                self.pick(_NAMES)
        if kind < 0.95:
            return self.pick([b"NOOP", b"CHECK", b"EXPUNGE", b"UID EXPUNGE 1:*", b"CAPABILITY", b"NAMESPACE",
                              b"ENABLE CONDSTORE", b"ID NIL", b"SELECT INBOX (CONDSTORE)", b"UNSELECT", b"CLOSE",
                              b"SELECT INBOX"])
        return self.mutated(self.command())

    def mutated(self, line):
        """A grammar-shaped command with a few bytes changed, dropped or repeated (never a line end or a literal)."""
        data = bytearray(line.split(b"\r\n", 1)[0])
        for _ in range(self.rng.randint(1, 4)):
            if not data:
                break
            at = self.rng.randrange(len(data))
            action = self.rng.random()
            if action < 0.4:
                data[at] = self.rng.choice(b'()[]<>"\\*% .:,0123456789AZaz\x00\xff\x7f')
            elif action < 0.7:
                del data[at:at + self.rng.randint(1, 8)]
            else:
                data[at:at] = data[at:at + self.rng.randint(1, 20)] * self.rng.randint(1, 30)
        while data.endswith(b"}"):
            data.append(ord("x"))
        return bytes(data)


class IMAPFuzzTests(unittest.TestCase):
    def test_random_commands(self):
        rng = random.Random(SEED)
        grammar = Grammar(rng)
        session = self.fresh_session()
        for number in range(COMMANDS):
            if session.server.state == "logout":
                session = self.fresh_session()
            if session.server.state == "auth":
                session.command(b"s SELECT INBOX")
            tag = b"Z%d" % number
            line = tag + b" " + grammar.command()
            started = time.perf_counter()
            out = session.send(line + b"\r\n")
            took = time.perf_counter() - started
            where = "IMAP fuzz seed %d, command %d: %r\n-> %r" % (SEED, number, line[:500], out[-500:])
            tagged = [reply for reply in out.split(b"\r\n") if reply.startswith(tag + b" ")]
            if session.server.state != "logout":
                self.assertEqual(len(tagged), 1, where)
            self.assertNotIn(b"SERVERBUG", out, where)
            self.assertNotIn(b"Traceback", out, where)
            self.assertLess(took, SECONDS_PER_COMMAND, where)

    def fresh_session(self):
        session = Session(self).login(select=False)
        for raw in _MESSAGES:
            session.append(raw)
        session.command(b"s SELECT INBOX")
        return session
