"""
A random MIME generator against the message parser and what is rendered
from it (ENVELOPE, BODYSTRUCTURE, BODY and the sections of every part):
nested multiparts, folded and broken headers, missing or unclosed
boundaries, message/rfc822, empty parts, bare LFs, nesting past the depth
bound and part counts past L{message.MAX_PARTS}.  Seeded: a failure names
its seed and message number, and C{TREKMAIL_FUZZ_SEED} replays it.
"""

import os
import random
import re
import time

from twisted.trial import unittest

from trekmail.imap import message

SEED = int(os.environ.get("TREKMAIL_FUZZ_SEED", "19"))
MESSAGES = 500
SECONDS_PER_MESSAGE = 1.0
"""CPU seconds of this thread (not wall time, which a busy machine stretches): a parser gone quadratic or backtracking blows past it."""
_NEGATIVE = re.compile(rb"[ (]-[0-9]")
_WORDS = [b"hello", b"caf\xc3\xa9", b"\xff\xfe", b"=?utf-8?q?x?=", b'"quoted \\" word"', b"(comment)", b"<a@b>",
          b"a@example.com", b"", b" ", b"\t", b";", b"=", b'"', b"\\", b"--", b"\x00", b"\r", b"boundary"]


class Generator:
    def __init__(self, rng):
        self.rng = rng
        self.room = 0
        self.chain = False

    def eol(self):
        return self.rng.choice([b"\r\n"] * 8 + [b"\n", b"\r"])

    def words(self, most=6):
        return b" ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(0, most)))

    def field(self, name, value):
        """A header field, sometimes folded over many lines or with a broken continuation."""
        rng = self.rng
        text = name + b":" + rng.choice([b" ", b"", b"  "]) + value
        for _ in range(rng.choice([0, 0, 0, 1, 3, 50])):
            text += self.eol() + rng.choice([b" ", b"\t", b"", b"   "]) + self.words(3)
        return text + self.eol()

    def header(self, content_type):
        rng = self.rng
        fields = []
        if content_type is not None:
            fields.append(self.field(rng.choice([b"Content-Type", b"content-type", b"CONTENT-TYPE"]), content_type))
        for name in rng.sample([b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID", b"In-Reply-To",
                                b"Content-Transfer-Encoding", b"Content-Disposition", b"Content-Language",
                                b"Content-ID", b"Content-Location", b"Content-MD5", b"X-Junk", b"Sender"],
                               rng.randint(0, 6)):
            fields.append(self.field(name, self.words()))
        if rng.random() < 0.1:
            fields.append(rng.choice([b"no colon here", b" leading space: x", b":", b"\x00\x01: y"]) + self.eol())
        rng.shuffle(fields)
        return b"".join(fields)

    def body(self):
        rng = self.rng
        kind = rng.random()
        if kind < 0.3:
            return b""
        if kind < 0.4:
            return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
        return b"".join(self.words(8) + self.eol() for _ in range(rng.randint(1, 8)))

    def part(self, depth):
        rng = self.rng
        self.room -= 1
        choice = rng.random()
        if self.chain and depth < message.MAX_DEPTH + 5:
            choice = 0.5 if rng.random() < 0.5 else 1
        elif self.room <= 0:
            choice = 0
        if choice < 0.4:
            leaf = rng.choice([b"text/plain", b"text/html; charset=utf-8", b"application/octet-stream",
                               b"image/png; name=\"a.png\"", b"text", b"/", b"", b"text/plain; charset=\"",
                               None])
            return self.header(leaf) + self.separator() + self.body()
        if choice < 0.55:
            return self.header(b"message/rfc822") + self.separator() + self.part(depth + 1)
        return self.multipart(depth)

    def separator(self):
        return self.rng.choice([b"\r\n"] * 8 + [b"\n", b"", b" \r\n", b"\r\n\r\n"])

    def multipart(self, depth):
        rng = self.rng
        boundary = rng.choice([b"b%d" % depth, b"=_%d" % rng.randint(0, 9), b"x", b"caf\xc3\xa9", b"\xff",
                               b"a b", b"-", b"b%d" % (depth - 1)])
        subtype = rng.choice([b"mixed", b"alternative", b"digest", b"related", b"signed"])
        parameter = rng.choice([b"; boundary=" + boundary, b'; boundary="' + boundary + b'"', b"",
                                b"; boundary=", b'; BOUNDARY="' + boundary + b'"; x=y'])
        out = [self.header(b"multipart/" + subtype + parameter) + self.separator()]
        if rng.random() < 0.3:
            out.append(self.body())
        count = rng.choice([0, 1, 2, 3, 5]) if rng.random() < 0.98 else rng.randint(900, 2500)
        if self.chain:
            count = 1
        for _ in range(count):
            out.append(rng.choice([b"\r\n", b"\n", b""]) + b"--" + boundary + rng.choice([b"", b"  ", b"junk"])
                       + self.eol())
            out.append(self.part(depth + 1) if count < 50 else rng.choice([b"", b"\r\n", b"x\r\n"]))
        ending = rng.random()
        if ending < 0.7:
            out.append(self.eol() + b"--" + boundary + b"--" + self.eol())
        if ending < 0.2:
            out.append(self.body())
        return b"".join(out)

    def message(self):
        """Mostly up to 40 parts; one in twenty a chain nested past L{message.MAX_DEPTH}."""
        self.room = 40
        self.chain = self.rng.random() < 0.05
        raw = self.part(0)
        if self.rng.random() < 0.05:
            raw = raw[:self.rng.randint(0, len(raw))]
        return raw


def parts(tree):
    """Every part with its section path (as IMAP numbers them)."""
    found = []
    stack = [((), tree)]
    while stack:
        path, part = stack.pop()
        found.append((path, part))
        inner = part.message if part.message is not None else part
        for number, child in enumerate(inner.children, 1):
            stack.append((path + (number,), child))
        if part.message is not None and not part.message.children:
            found.append((path + (1,), part.message))
    return found


class MimeFuzzTests(unittest.TestCase):
    def check(self, raw):
        tree = message.parse(raw)
        every = parts(tree)
        self.assertLessEqual(len(every), message.MAX_PARTS + message.MAX_DEPTH + 2)
        for _, part in every:
            self.assertTrue(0 <= part.start <= part.body_start <= part.end <= len(raw),
                            (part.start, part.body_start, part.end, len(raw)))
        envelope, bodystructure, body = message.structures(raw)
        for rendered in (envelope, bodystructure, body):
            self.assertIsInstance(rendered, bytes)
            self.assertIsNone(_NEGATIVE.search(rendered), rendered[:300])
        self.assertLess(len(bodystructure), 400 * (message.MAX_PARTS + message.MAX_DEPTH + 2) + 10 * len(raw))
        for path, _ in every[:8]:
            for text in ("", "MIME", "HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                if text == "MIME" and not path:
                    continue
                value = message.section(raw, path, text, ("SUBJECT", "FROM"))
                self.assertIsInstance(value, bytes)
                # Selected header fields end with a line end and a blank line of their own, whatever the message has.
                self.assertLessEqual(len(value), len(raw) + 4 if text.startswith("HEADER.FIELDS") else len(raw))
        for path in ((99,), (1, 99), (0,), (1, 1, 1, 1)):
            self.assertIsInstance(message.section(raw, path, "", ()), bytes)

    def test_random_messages(self):
        rng = random.Random(SEED)
        generator = Generator(rng)
        for number in range(MESSAGES):
            raw = generator.message()
            started = time.thread_time()
            try:
                self.check(raw)
            except Exception as e:
                raise AssertionError("MIME fuzz seed %d, message %d (%d bytes): %r\n%r"
                                     % (SEED, number, len(raw), e, raw[:2000])) from e
            took = time.thread_time() - started
            self.assertLess(took, SECONDS_PER_MESSAGE,
                            "MIME fuzz seed %d, message %d took %.2f s" % (SEED, number, took))
