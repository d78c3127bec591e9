"""
IMAP in two real processes (C{[imap] processes = 2}): a real C{twistd -n
trekmail} and the process it spawns (L{trekmail.imapchild}), reached
with imaplib over real loopback sockets.  What the in-process
L{tests.test_imap_cluster} cannot show: the spawn itself, a killed
process restarted with its caps given back, connections shared out
between the processes as they are accepted, the stop, the exit of a
process whose first process died, and the refusal of a listener that
cannot be shared.
"""

import imaplib
import os
import re
import signal
import socket
import time

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from tests.imap_site import message
from tests.server_process import ServerProcess, free_port, run_twistd
from tests.support import client_context, write_config
from tests.test_admin_api import TOKEN, http
from tests.test_lifecycle_e2e import closed
from trekmail.cli import WallClock
from trekmail.config import Config
from trekmail.plans import plan_named
from trekmail.queue.maildir import deliver_batch
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail import settings

PASSWORD = "correct horse"
SIZE = 2
SESSIONS = 8
STARTED = re.compile(r"IMAP process 1 started \(pid (\d+)\)")


ADDRESSES = ["user%d@example.com" % n for n in range(4)]
CAPPED = "user0@example.org"
"""On a nano account: the process that dies holds its cap's worth of sessions."""


def has_socket(pid, inode):
    directory = "/proc/%d/fd" % pid
    for fd in os.listdir(directory):
        try:
            if os.readlink(os.path.join(directory, fd)) == "socket:[%s]" % inode:
                return True
        except FileNotFoundError:
            continue
    return False


def exited(pid):
    """Whether C{pid} has ended (a zombie has, even if whoever adopted it has not reaped it yet)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@defer.inlineCallbacks
def until(condition, why, timeout=10):
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError("%s: not within %s s" % (why, timeout))
        yield task.deferLater(reactor, 0.05, lambda: None)


def connect(port, tls):
    if tls:
        return imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_context(), timeout=10)
    return imaplib.IMAP4("127.0.0.1", port, timeout=10)


def untagged(client, *names):
    """Pops the untagged responses C{names} imaplib has collected: {name: [data, ...]}, empty ones left out."""
    found = {}
    for name in names:
        data = client.response(name)[1]
        if data != [None]:
            found[name] = data
    return found


def noop(client):
    """NOOP, and the changes it reported (what earlier commands left is dropped first)."""
    untagged(client, "EXISTS", "EXPUNGE", "FETCH")
    ok, _ = client.noop()
    assert ok == "OK", ok
    return untagged(client, "EXISTS", "EXPUNGE", "FETCH")


class TwoProcessesTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.ports = {"imaps": free_port(), "imap": free_port(), "admin": free_port()}
        self.config_path = write_config(
            self.mktemp(), "[imap]\nprocesses = %d\ntrusted_networks = 127.0.0.0/8\n[admin]\ntoken = %s\n" % (SIZE, TOKEN),
            **{name: "tcp:%d:interface=127.0.0.1" % port for name, port in self.ports.items()})
        self.config = Config.from_file(self.config_path)
        db = database.connect(self.config.database_path)
        try:
            database.upgrade(db, schema.SCHEMAS)
            admin = Administration(db, settings.realm(self.config), WallClock())
            agency = admin.account_add("owner@example.net", "agency", verified=True)
            admin.domain_add("example.com", agency.id)
            for address in ADDRESSES:
                admin.mailbox_add(address, PASSWORD)
            nano = admin.account_add("small@example.net", "nano", verified=True)
            admin.domain_add("example.org", nano.id)
            admin.mailbox_add(CAPPED, PASSWORD)
        finally:
            db.close()
        self.children = []
        self.addCleanup(self.end_children)
        self.server = ServerProcess(self, self.config_path)
        yield self.server.start(self.ports.values())
        self.child = yield self.started(1)

    def end_children(self):
        """Runs after the server's stop: a process of ours still there (the test failed) must not outlive it."""
        for pid in self.children:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    ours = b"trekmail.imapchild" in f.read()
            except FileNotFoundError:
                continue
            if ours and not exited(pid):
                os.kill(pid, signal.SIGKILL)

    @defer.inlineCallbacks
    def started(self, count):
        """The pid of the C{count}th start of IMAP process 1 in the log."""
        yield until(lambda: len(STARTED.findall(self.server.log())) >= count,
                    "IMAP process 1 started %d times\n%s" % (count, self.server.log()))
        pid = int(STARTED.findall(self.server.log())[count - 1])
        self.children.append(pid)
        return pid

    def login(self, address, tls, attempts=1):
        """
        A client logged in to C{address}; call in a thread.  With
        C{attempts}, a login answered C{NO [UNAVAILABLE]} (the owner is
        restarting) is tried again on a new connection.
        """
        for attempt in range(attempts):
            client = connect(self.ports["imaps" if tls else "imap"], tls)
            try:
                client.login(address, PASSWORD)
                return client
            except imaplib.IMAP4.error as e:
                client.shutdown()
                if "[UNAVAILABLE]" not in str(e) or attempt == attempts - 1:
                    raise
            time.sleep(0.1)

    def holder(self, client):
        """Which of the two processes holds the server's end of C{client}'s connection."""
        port = client.sock.getsockname()[1]
        ends = "0100007F:%04X 0100007F:%04X" % (self.ports["imaps"], port), \
            "0100007F:%04X 0100007F:%04X" % (self.ports["imap"], port)
        with open("/proc/net/tcp") as f:
            inode = next(line.split()[9] for line in f if " ".join(line.split()[1:3]) in ends)
        deadline = time.monotonic() + 5
        while True:
            holders = [pid for pid in (self.server.process.pid, self.child) if has_socket(pid, inode)]
            if len(holders) == 1:
                return holders[0]
            self.assertLess(time.monotonic(), deadline, "held by %s" % holders)
            time.sleep(0.01)

    def accepted_by(self, index, count=1, tls=False):
        """
        C{count} connections served by process C{index}: the first process
        places each new connection with whichever serves fewer, so a
        connection that went to the other is kept open until we have ours.
        Its first login makes that process the mailbox's owner.
        """
        wanted = (self.server.process.pid, self.child)[index]
        clients, elsewhere = [], []
        while len(clients) < count:
            self.assertLess(len(elsewhere), 10, "placement never chose process %d" % index)
            client = connect(self.ports["imaps" if tls else "imap"], tls)
            (clients if self.holder(client) == wanted else elsewhere).append(client)
        for client in elsewhere:
            client.shutdown()
        return clients

    def share(self, address, owner):
        """
        Eight sessions of one mailbox, half accepted by each process (half
        of those over TLS), the first login on process C{owner}: each sees
        what the others did; call in a thread.
        """
        clients = []
        for index in (owner, 1 - owner):
            for n in range(SESSIONS // 2):
                clients += self.accepted_by(index, tls=n % 2 == 0)
        try:
            for client in clients:
                client.login(address, PASSWORD)
                self.assertEqual(client.select("INBOX"), ("OK", [b"0"]))
            appender, flagger, expunger = clients[:3]
            for subject in ("kept", "expunged"):
                self.assertEqual(appender.append("INBOX", None, None, message(subject=subject))[0], "OK")
            for client in clients[1:]:
                self.assertEqual(noop(client).get("EXISTS"), [b"2"], "the APPEND reached every session")

            self.assertEqual(flagger.store("1", "+FLAGS", "(\\Flagged)")[0], "OK")
            self.assertEqual(expunger.store("2", "+FLAGS", "(\\Deleted)")[0], "OK")
            self.assertEqual(expunger.expunge(), ("OK", [b"2"]))
            for client in clients:
                if client is not expunger:
                    self.assertEqual(noop(client).get("EXPUNGE"), [b"2"])
                ok, data = client.fetch("1:*", "(FLAGS)")
                self.assertEqual(ok, "OK")
                self.assertEqual(len(data), 1, data)
                self.assertIn(b"\\Flagged", data[0])

            self.assertEqual(deliver_batch(self.config.data_dir, "mail.test",
                                           [(address, "bob@remote.test", message(subject="delivered"))], time.time), [None])
            deadline = time.monotonic() + 10
            while noop(clients[-1]).get("EXISTS") != [b"2"]:
                self.assertLess(time.monotonic(), deadline, "the delivery never showed up")
                time.sleep(0.05)
            for client in clients:
                if client is not clients[-1]:
                    self.assertEqual(noop(client).get("EXISTS"), [b"2"])
                ok, data = client.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                self.assertEqual(ok, "OK")
                self.assertEqual(data[0][1].strip(), b"Subject: delivered")
        finally:
            for client in clients:
                client.logout()

    @defer.inlineCallbacks
    def test_sessions_of_one_mailbox_share_its_state(self):
        for owner in range(SIZE):
            yield threads.deferToThread(self.share, ADDRESSES[owner], owner)

    def held_by_process_1(self):
        client = self.accepted_by(1)[0]
        client.login(ADDRESSES[0], PASSWORD)
        return client

    def placed(self):
        """Six connections opened one after another, over both listeners: how many each process holds."""
        clients = [connect(self.ports["imaps" if n % 2 else "imap"], n % 2 == 1) for n in range(6)]
        try:
            holders = [self.holder(client) for client in clients]
        finally:
            for client in clients:
                client.shutdown()
        return sorted(holders.count(pid) for pid in (self.server.process.pid, self.child))

    def test_connections_are_shared_out_as_they_arrive(self):
        return threads.deferToThread(self.placed).addCallback(self.assertEqual, [3, 3])

    def delete_and_rename(self):
        """A session owned by each process, one deleted and one renamed through the admin API: how each ends."""
        owned = []
        for index in range(SIZE):
            client = self.accepted_by(index)[0]
            client.login(ADDRESSES[index], PASSWORD)
            client.select("INBOX")
            owned.append(client)
        untouched = self.login(ADDRESSES[2], tls=False)
        port = self.ports["admin"]
        ended = [http(port, "DELETE", "/mailboxes/%s?yes=1" % ADDRESSES[0]), closed(owned[0]),
                 http(port, "POST", "/mailboxes/%s/rename" % ADDRESSES[1], {"address": "renamed@example.com"}),
                 closed(owned[1])]
        ended.append(untouched.noop()[0])
        untouched.logout()
        return ended

    @defer.inlineCallbacks
    def test_admin_api_closes_sessions_in_either_process_at_once(self):
        """In the first process by a call, in the other on SIGUSR2: well within the 5 s re-check."""
        deleted, first, renamed, other, untouched = yield threads.deferToThread(self.delete_and_rename)
        self.assertEqual((deleted[0], renamed[0]), (200, 200), (deleted, renamed))
        for line, waited, after in (first, other):
            self.assertEqual(line, b"* BYE This mailbox no longer exists\r\n")
            self.assertLess(waited, 1)
            self.assertTrue(after.startswith("closed"), after)
        self.assertEqual(untouched, "OK")
        self.assertNotIn("Traceback", self.server.log())

    def fill_cap(self):
        """The nano account's sessions from 127.0.0.1, all held by process 1; the next is refused."""
        held = self.accepted_by(1)
        held[0].login(CAPPED, PASSWORD)
        held += [self.login(CAPPED, tls=False) for _ in range(plan_named("nano").imap_per_ip - 1)]
        with self.assertRaises(imaplib.IMAP4.error) as caught:
            self.login(CAPPED, tls=False)
        self.assertIn("Maximum connections exceeded", str(caught.exception))
        return held

    def log_in_everywhere(self):
        """Every mailbox, over both listeners, retried while process 1 is not back yet."""
        for address in ADDRESSES + [CAPPED]:
            for tls in (False, True):
                client = self.login(address, tls, attempts=50)
                self.assertEqual(client.select("INBOX")[0], "OK")
                client.logout()

    @defer.inlineCallbacks
    def test_killed_process_is_restarted_and_gives_its_caps_back(self):
        held = yield threads.deferToThread(self.fill_cap)
        os.kill(self.child, signal.SIGKILL)
        replacement = yield self.started(2)
        self.assertNotEqual(replacement, self.child)
        ended = [line for line in self.server.log().splitlines() if "IMAP process 1 ended" in line]
        self.assertEqual(len(ended), 1, self.server.log())
        self.assertIn("signal 9", ended[0])
        self.assertIn("another starts in", ended[0])
        self.assertTrue(exited(self.child))
        yield threads.deferToThread(self.log_in_everywhere)
        self.assertFalse(exited(replacement))
        for client in held:
            client.shutdown()

    @defer.inlineCallbacks
    def test_stop_ends_the_other_process(self):
        held = yield threads.deferToThread(self.held_by_process_1)
        began = reactor.seconds()
        yield threads.deferToThread(self.server.stop)
        self.assertIn(self.server.process.returncode, (0, -signal.SIGTERM), self.server.log())
        self.assertLess(reactor.seconds() - began, 5, "a process that ignores TERM is killed only after 10 s")
        yield until(lambda: exited(self.child), "process 1 (pid %d) ended" % self.child, timeout=2)
        log = self.server.log()
        self.assertNotIn("IMAP process 1 ended", log, "no restart announced while stopping")
        self.assertNotIn("Traceback", log)
        held.shutdown()

    @defer.inlineCallbacks
    def test_other_process_exits_when_the_first_dies(self):
        held = yield threads.deferToThread(self.held_by_process_1)
        self.server.kill()
        yield until(lambda: exited(self.child), "process 1 (pid %d) ended on its own" % self.child, timeout=5)
        for port in self.ports.values():
            with self.assertRaises(ConnectionRefusedError, msg="nobody serves port %d" % port):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
        held.shutdown()


class RefusedTests(unittest.TestCase):
    def test_ssl_listener_is_refused(self):
        path = write_config(self.mktemp(), "[imap]\nprocesses = 2\n",
                            imaps="ssl:%d:interface=127.0.0.1:privateKey=key.pem" % free_port())
        process = run_twistd(path)
        self.assertEqual(process.returncode, 78, process.stdout + process.stderr)
        lines = process.stderr.splitlines()
        self.assertEqual(len(lines), 1, process.stderr)
        self.assertTrue(lines[0].startswith("trekmail: configuration error: [imap] processes: "), lines[0])
        self.assertIn("[listen] imaps = ssl:", lines[0])
