"""
C{trekmail backup} of a running C{twistd -n trekmail} while messages are
being submitted and delivered, C{trekmail restore} into a fresh data
directory, and a second server on it serving the same mail over IMAP:
every message the backup saw, byte for byte, with the flags it had.
"""

import imaplib
import json
import os
import re
import smtplib
from io import StringIO

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from tests.server_process import ServerProcess, free_port
from tests.support import client_context, example_server, write_config
from trekmail import cli

PASSWORD = "correct horse"
_ITEM = re.compile(rb"FLAGS \(([^)]*)\)")


def _submit(port, numbers):
    with smtplib.SMTP_SSL("127.0.0.1", port, context=client_context(), timeout=30) as c:
        c.login("alice@example.com", PASSWORD)
        for n in numbers:
            c.sendmail("alice@example.com", ["alice@example.com"],
                       b"From: alice@example.com\r\nMessage-ID: <load-%d@example.com>\r\nSubject: %d\r\n\r\n%s\r\n"
                       % (n, n, b"line\r\n" * n))


def _mail(port):
    """{Message-ID: [(bytes, flags)]} of INBOX."""
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_context(), timeout=30)
    client.login("alice@example.com", PASSWORD)
    client.select("INBOX", readonly=True)
    _, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    client.logout()
    out = {}
    for head, body in (item for item in data if isinstance(item, tuple)):
        flags = frozenset(_ITEM.search(head).group(1).decode().split()) - {"\\Recent"}
        message_id = re.search(rb"Message-ID: <([^>]+)>", body).group(1).decode()
        out.setdefault(message_id, []).append((body, flags))
    return out


def _flag(port):
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_context(), timeout=30)
    client.login("alice@example.com", PASSWORD)
    client.select("INBOX")
    client.uid("STORE", "1:3", "+FLAGS", "(\\Flagged \\Seen)")
    client.uid("STORE", "4", "+FLAGS", "(Important)")
    client.logout()


def _cli(*argv):
    out, err = StringIO(), StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


class BackupTests(unittest.TestCase):
    def _server(self, directory):
        ports = {"submissions": free_port(), "imaps": free_port()}
        path = write_config(directory, **{k: "tcp:%d:interface=127.0.0.1" % p for k, p in ports.items()})
        return path, ports

    @defer.inlineCallbacks
    def _until(self, check, timeout=30):
        deadline = reactor.seconds() + timeout
        while True:
            result = yield threads.deferToThread(check)
            if result:
                return result
            if reactor.seconds() > deadline:
                raise AssertionError("never came true")
            yield task.deferLater(reactor, 0.2, lambda: None)

    @defer.inlineCallbacks
    def test_backup_under_load_restores_to_a_server_with_the_same_mail(self):
        path, ports = self._server(self.mktemp())
        example_server(path, password=PASSWORD)
        live = ServerProcess(self, path)
        yield live.start(ports.values())

        yield threads.deferToThread(_submit, ports["submissions"], range(1, 11))
        yield self._until(lambda: len(_mail(ports["imaps"])) == 10)
        yield threads.deferToThread(_flag, ports["imaps"])
        yield self._until(lambda: sum(1 for v in _mail(ports["imaps"]).values() if v[0][1]) == 4)

        backup_dir = os.path.abspath(self.mktemp())
        load = threads.deferToThread(_submit, ports["submissions"], range(11, 41))
        summary = yield threads.deferToThread(_cli, "--config", path, "--json", "backup", backup_dir)
        yield load
        self.assertEqual(summary["format"], 1)
        self.assertEqual(summary["mailboxes"], 1)
        with open(os.path.join(backup_dir, "manifest.json")) as f:
            self.assertEqual(json.load(f)["format"], 1)
        yield self._until(lambda: len(_mail(ports["imaps"])) == 40)
        before = yield threads.deferToThread(_mail, ports["imaps"])

        restored_path, restored_ports = self._server(self.mktemp())
        restored = _cli("--config", restored_path, "--json", "restore", backup_dir)
        self.assertGreater(restored["files"], 10)
        err = StringIO()
        self.assertEqual(cli.main(["--config", restored_path, "restore", backup_dir], stdout=StringIO(), stderr=err), 1)
        self.assertIn("is not empty", err.getvalue())

        live.stop()
        server = ServerProcess(self, restored_path)
        yield server.start(restored_ports.values())
        after = yield self._until(lambda: (lambda m: m if len(m) >= 10 else None)(_mail(restored_ports["imaps"])))

        for n in range(1, 11):
            self.assertIn("load-%d@example.com" % n, after)
        for message_id, copies in after.items():
            for body, flags in copies:
                self.assertEqual(body, before[message_id][0][0], message_id)
                self.assertEqual(flags, before[message_id][0][1], message_id)
        self.assertEqual(after["load-1@example.com"][0][1], {"\\Flagged", "\\Seen"})
        self.assertEqual(after["load-4@example.com"][0][1], {"Important"})
        self.assertEqual(after["load-5@example.com"][0][1], frozenset())
