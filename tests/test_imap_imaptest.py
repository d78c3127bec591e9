"""
Dovecot's imaptest against the server: its default stress profile, 20
clients for 60 seconds, with its state checking on, must report no error.

imaptest is not a Python package: build it once outside the repository
(github dovecot/imaptest, release-2.3.21, against Debian's dovecot-dev;
see the IMAP section of the README) and point C{TREKMAIL_IMAPTEST} at the
binary, or leave it at /work/build/imaptest/imaptest.
"""

import os
import random
import re

from twisted.internet import defer, reactor, utils
from twisted.trial import unittest

from tests.imap_site import PASSWORD, Site

IMAPTEST = os.environ.get("TREKMAIL_IMAPTEST", "/work/build/imaptest/imaptest")
CLIENTS = 20
SECONDS = 60


def write_mbox(path, count=300, seed=3):
    """Messages of 1-20 KiB, some multipart, in mbox form for imaptest's C{mbox=}."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(count):
            body = "line of message %d with some words to fill it\n" % i
            body *= rng.randint(1024, 20 * 1024) // len(body)
            head = ("From sender@example.net Sat Nov 21 12:00:00 2026\nFrom: Sender %d <s%d@example.net>\n"
                    "To: alice@example.com\nSubject: message %d\nDate: Sat, 21 Nov 2026 12:%02d:00 +0000\n"
                    "Message-ID: <m%d@example.net>\n" % (i, i % 7, i, i % 60, i))
            if i % 4 == 0:
                head += ('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n'
                         "Content-Type: text/plain\n\n%s\n--b%d\nContent-Type: application/octet-stream\n"
                         "Content-Transfer-Encoding: base64\n\nQUJDREVGRw==\n--b%d--\n" % (i, i, body, i, i))
                f.write(head.encode() + b"\n")
            else:
                f.write((head + "\n" + body + "\n").encode())


class ImaptestTests(unittest.TestCase):
    timeout = SECONDS + 120

    @defer.inlineCallbacks
    def test_default_profile_reports_no_errors(self):
        self.assertTrue(os.access(IMAPTEST, os.X_OK),
                        "imaptest binary not found at %s (set TREKMAIL_IMAPTEST)" % (IMAPTEST,))
        site = Site(self, appendlimit=50 * 1024 * 1024)
        site.account(plan="agency")
        mbox = os.path.abspath(self.mktemp())
        write_mbox(mbox)
        args = ["host=127.0.0.1", "port=%d" % site.ports["imaps"], "ssl=any-cert", "user=alice@example.com",
                "pass=%s" % PASSWORD, "mbox=%s" % mbox, "clients=%d" % CLIENTS, "secs=%d" % SECONDS]
        out, err, code = yield utils.getProcessOutputAndValue(IMAPTEST, args, env=dict(os.environ),
                                                              reactor=reactor)
        text = (out + err).decode("utf-8", "replace")
        errors = [line for line in text.splitlines() if "Error:" in line or "Panic" in line]
        self.assertEqual(errors[:20], [], "imaptest reported %d errors" % (len(errors),))
        self.assertEqual(code, 0, text[-2000:])
        totals = text.split("Totals:")[-1].strip().splitlines()
        self.assertGreaterEqual(len(totals), 4, text[-2000:])
        counts = [int(n) for n in re.findall(r"\d+", totals[-1])]
        self.assertGreater(sum(counts), 1000, "imaptest did almost nothing:\n" + text[-2000:])
