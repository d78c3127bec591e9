"""
C{trekmail backup} of a running C{twistd -n trekmail} while messages are
being submitted and delivered, or while an IMAP client appends, copies
and expunges (so that APPENDs write into expunged messages' files),
C{trekmail restore} into a fresh data directory, and a second server on
it serving the same mail over IMAP: every message the backup saw, byte
for byte, with the flags it had, and never one message's bytes under
another's name.
"""

import imaplib
import json
import os
import re
import smtplib
import threading
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


def _mail(port, folder="INBOX"):
    """{Message-ID: [(bytes, flags)]} of C{folder}."""
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_context(), timeout=30)
    client.login("alice@example.com", PASSWORD)
    client.select(folder, readonly=True)
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


def _churned(n):
    """The n-th message the IMAP load appends: its bytes say which it is, and its size varies."""
    return (b"From: alice@example.com\r\nMessage-ID: <churn-%d@example.com>\r\nSubject: churn %d\r\n\r\n%s"
            % (n, n, b"this is churned message %d\r\n" % n * (n % 40 + 1)))


def _churn(port, stop, cycles):
    """
    Until C{stop} is set: APPEND a message, COPY every third one to
    Archive, then expunge it from INBOX, so the next APPEND writes into
    its file (a spare, unless Archive holds a link to it).  C{cycles}
    grows by one each time round.
    """
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_context(), timeout=30)
    client.login("alice@example.com", PASSWORD)
    client.create("Archive")
    client.select("INBOX")
    n = 0
    while not stop.is_set():
        n += 1
        status, data = client.append("INBOX", None, None, _churned(n))
        assert status == "OK", (status, data)
        uid = re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1).decode()
        if n % 3 == 0:
            assert client.uid("COPY", uid, "Archive")[0] == "OK"
        client.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
        client.expunge()
        cycles.append(n)
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
    def _live_with(self, count):
        """A running server whose INBOX holds C{count} submitted messages: (its config, its ports, its process)."""
        path, ports = self._server(self.mktemp())
        example_server(path, password=PASSWORD)
        live = ServerProcess(self, path)
        yield live.start(ports.values())
        yield threads.deferToThread(_submit, ports["submissions"], range(1, count + 1))
        yield self._until(lambda: len(_mail(ports["imaps"])) == count)
        return path, ports, live

    @defer.inlineCallbacks
    def test_backup_under_load_restores_to_a_server_with_the_same_mail(self):
        path, ports, live = yield self._live_with(10)
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

    @defer.inlineCallbacks
    def test_backup_beside_appends_into_expunged_files_holds_only_whole_messages(self):
        path, ports, live = yield self._live_with(5)
        before = yield threads.deferToThread(_mail, ports["imaps"])

        stop, cycles = threading.Event(), []
        churning = threads.deferToThread(_churn, ports["imaps"], stop, cycles)
        self.addCleanup(stop.set)
        yield self._until(lambda: len(cycles) >= 15)
        during = len(cycles)
        backup_dir = os.path.abspath(self.mktemp())
        summary = yield threads.deferToThread(_cli, "--config", path, "--json", "backup", backup_dir)
        yield self._until(lambda: len(cycles) >= max(during, 15) + 15)
        stop.set()
        yield churning
        self.assertEqual(summary["mailboxes"], 1)

        restored_path, restored_ports = self._server(self.mktemp())
        _cli("--config", restored_path, "--json", "restore", backup_dir)
        live.stop()
        server = ServerProcess(self, restored_path)
        yield server.start(restored_ports.values())
        inbox = yield threads.deferToThread(_mail, restored_ports["imaps"])
        archive = yield threads.deferToThread(_mail, restored_ports["imaps"], "Archive")

        self.assertEqual({k: [body for body, _ in v] for k, v in inbox.items() if k.startswith("load-")},
                         {k: [body for body, _ in v] for k, v in before.items()})
        self.assertGreaterEqual(len(archive), during // 3 - 1, "the copies made before the backup")
        for folder, messages in (("INBOX", inbox), ("Archive", archive)):
            for message_id, copies in messages.items():
                if message_id.startswith("churn-"):
                    n = int(message_id.split("-")[1].split("@")[0])
                    self.assertEqual([body for body, _ in copies], [_churned(n)], (folder, message_id))
        self.assertNotIn("Traceback", live.log() + server.log())
