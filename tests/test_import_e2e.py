"""
C{trekmail import imap} from a real Dovecot into a running C{twistd -n
trekmail}, read back through TrekMail's own IMAP: folders (Dovecot's
C{/} hierarchy as TrekMail's C{.}), bytes, flags and keywords, and
INTERNALDATE all as the source had them; a run cut short (by a failure
after some messages, and between committing a message and moving its
file; or a C{trekmail import} process killed with SIGKILL half-way) and
run again copies exactly what was missing.
"""

import imaplib
import os
import re
import signal
import subprocess
import sys
import time
from io import StringIO

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from tests.dovecot import Dovecot
from tests.server_process import ServerProcess, free_port
from tests.support import REPO, client_context, example_server, write_config
from trekmail import cli
from trekmail.admin import importimap, importtarget
from trekmail.config import Config
from trekmail.mailstore import maildir_path

PASSWORD = "correct horse"
SOURCE_USER, SOURCE_PASSWORD = "alice@old.example", "s3cret"
_ITEM = re.compile(rb'UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE "([^"]+)"')


def _message(n, size=0):
    return (b"From: bob@old.example\r\nTo: alice@old.example\r\nSubject: message %d\r\n"
            b"Message-ID: <m%d@old.example>\r\n\r\nbody %d\r\n" % (n, n, n)) + b"x" * size + b"\r\n"


SOURCE = {
    "INBOX": [(_message(1), "\\Seen", "01-Jan-2001 10:00:00 +0000"),
              (_message(2), "\\Answered \\Flagged $Label1", "15-Jun-2010 23:59:59 +0200"),
              (_message(3, 20000), "", "02-Feb-2002 02:02:02 +0000")],
    "Work": [(_message(4), "\\Seen Important", "03-Mar-2003 03:03:03 +0000")],
    "Work/Projects/2001": [(_message(5), "\\Draft", "04-Apr-2004 04:04:04 -0500"),
                           (_message(6), "\\Deleted \\Seen", "05-May-2005 05:05:05 +0000"),
                           (_message(7, 9000), "$Forwarded Later", "06-Jun-2006 06:06:06 +0000")],
    "Sent": [(_message(8), "\\Seen", "07-Jul-2007 07:07:07 +0000")],
}
EXPECTED_FOLDERS = {"INBOX": "INBOX", "Work": "Work", "Work/Projects/2001": "Work.Projects.2001", "Sent": "Sent",
                    "Work/Projects": "Work.Projects"}


def _fill(dovecot):
    client = dovecot.connect(SOURCE_USER, SOURCE_PASSWORD)
    for folder, messages in SOURCE.items():
        if folder != "INBOX":
            client.create('"%s"' % folder)
        for body, flags, date in messages:
            status, _ = client.append('"%s"' % folder, "(%s)" % flags, '"%s"' % date, body)
            assert status == "OK", status
    client.logout()


def _contents(client, folder):
    """{body: (flags, INTERNALDATE seconds)} of a folder, through an IMAP client."""
    status, _ = client.select('"%s"' % folder, readonly=True)
    assert status == "OK", (folder, status)
    status, data = client.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
    out = {}
    bodies = [item for item in data if isinstance(item, tuple)]
    for head, body in bodies:
        match = _ITEM.search(head)
        flags = frozenset(match.group(2).decode().split()) - {"\\Recent"}
        date = imaplib.Internaldate2tuple(b'INTERNALDATE "' + match.group(3) + b'"')
        assert body not in out, "duplicate message in %s" % folder
        out[body] = (flags, int(time.mktime(date)))
    return out


def _list(client):
    status, data = client.list()
    return {re.search(rb'"([^"]+)"$|(\S+)$', line).group(1 if line.endswith(b'"') else 2).decode() for line in data}


_ADD, _PUBLISH = importtarget.Mailbox.add, importtarget.publish


class IMAPImportTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.dovecot = Dovecot(self, {SOURCE_USER: SOURCE_PASSWORD})
        _fill(self.dovecot)
        self.imaps = free_port()
        self.path = write_config(self.mktemp(), imaps="tcp:%d:interface=127.0.0.1" % (self.imaps,))
        example_server(self.path, password=PASSWORD)
        self.server = ServerProcess(self, self.path)
        yield self.server.start([self.imaps])

    def _trekmail(self):
        client = imaplib.IMAP4_SSL("127.0.0.1", self.imaps, ssl_context=client_context(), timeout=30)
        client.login("alice@example.com", PASSWORD)
        self.addCleanup(client.shutdown)
        return client

    def _import(self):
        out, err = StringIO(), StringIO()
        code = cli.main(self._arguments(), stdin=StringIO(SOURCE_PASSWORD + "\n"), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def _arguments(self):
        return ["--config", self.path, "--json", "import", "imap", "--from", "127.0.0.1:%d" % self.dovecot.port,
                "--user", SOURCE_USER, "--password-stdin", "--insecure", "--mailbox", "alice@example.com"]

    def _cut_after(self, count, where):
        """The next run fails after C{count} messages are copied: in the source's read, or just before the move into C{new/}."""
        calls = []

        def add(mailbox, *args):
            if where == "read" and len(calls) == count:
                raise OSError("connection reset by peer")
            calls.append(args)
            return _ADD(mailbox, *args)

        def publish(staged, final):
            if where == "move" and len(calls) == count:
                raise OSError("killed")
            return _PUBLISH(staged, final)
        self.patch(importtarget.Mailbox, "add", add)
        self.patch(importtarget, "publish", publish)

    @defer.inlineCallbacks
    def test_import_copies_folders_flags_dates_and_bytes_and_resumes(self):
        self.patch(importimap, "CHUNK", 4096)
        watching = self._trekmail()
        watching.select("INBOX")
        self.assertEqual(int(watching.response("EXISTS")[1][0]), 0)

        self._cut_after(2, "read")
        code, out, err = self._import()
        self.assertEqual(code, 1)
        self.assertIn("import stopped: connection reset by peer", err)
        self.assertNotIn(SOURCE_PASSWORD, out + err)

        self._cut_after(5, "move")
        code, out, err = self._import()
        self.assertEqual(code, 1, out)
        self.assertIn("killed", err)

        self._cut_after(None, "nowhere")
        code, out, err = self._import()
        self.assertEqual(code, 0, err)

        # The session logged in all along sees the imported mail as new mail (inotify, or the NOOP's own look).
        deadline = reactor.seconds() + 20
        exists = 0
        while exists < 3 and reactor.seconds() < deadline:
            watching.noop()
            answers = watching.response("EXISTS")[1]
            exists = int(answers[-1]) if answers and answers[-1] else exists
            if exists < 3:
                yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(exists, 3)

        source = self.dovecot.connect(SOURCE_USER, SOURCE_PASSWORD)
        target = self._trekmail()
        self.assertTrue(set(EXPECTED_FOLDERS.values()) <= _list(target), _list(target))
        for folder, name in EXPECTED_FOLDERS.items():
            if folder == "Work/Projects":
                continue
            self.assertEqual(_contents(target, name), _contents(source, folder), folder)
        source.logout()

        code, out, err = self._import()
        self.assertEqual(code, 0, err)
        self.assertIn('"copied": 0', out)

    def _kill_half_way(self, total):
        """
        Run the import as a process of its own and SIGKILL it once part of
        the bulk folder has arrived: how many messages had.
        """
        root = maildir_path(Config.from_file(self.path).data_dir, "alice@example.com")
        places = [os.path.join(root, ".Bulk", "new"), os.path.join(root, ".Bulk", "cur"),
                  os.path.join(root, importtarget.STAGING)]

        def arrived():
            return sum(len(os.listdir(p)) for p in places if os.path.isdir(p))
        process = subprocess.Popen([sys.executable, "-m", "trekmail.cli"] + self._arguments(), cwd=REPO,
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process.stdin.write(SOURCE_PASSWORD.encode() + b"\n")
        process.stdin.close()
        deadline = time.monotonic() + 60
        while arrived() < total // 10 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        self.assertEqual(process.wait(30), -signal.SIGKILL, "the import ended before it could be killed")
        return arrived()

    @defer.inlineCallbacks
    def test_an_import_killed_half_way_resumes_without_loss_or_duplicates(self):
        total = 300
        client = self.dovecot.connect(SOURCE_USER, SOURCE_PASSWORD)
        client.create("Bulk")
        for n in range(total):
            flags = ("\\Seen", "\\Flagged", "", "$Label%d" % (n % 5))[n % 4]
            client.append("Bulk", "(%s)" % flags, '"%02d-Mar-2011 10:%02d:00 +0000"' % (n % 28 + 1, n % 60),
                          _message(100 + n, 3000))
        client.logout()

        copied = yield threads.deferToThread(self._kill_half_way, total)
        self.assertGreater(copied, 0)
        self.assertLess(copied, total, "killed before the bulk folder was done")
        code, out, err = self._import()
        self.assertEqual(code, 0, err)

        source = self.dovecot.connect(SOURCE_USER, SOURCE_PASSWORD)
        target = self._trekmail()
        for folder, name in list(EXPECTED_FOLDERS.items()) + [("Bulk", "Bulk")]:
            if folder == "Work/Projects":
                continue
            self.assertEqual(_contents(target, name), _contents(source, folder), folder)
        source.logout()
        self.assertEqual(len(_contents(target, "Bulk")), total)
        code, out, err = self._import()
        self.assertEqual((code, '"copied": 0' in out), (0, True), out + err)
