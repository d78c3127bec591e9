"""
Two IMAP "processes" in one test process (L{trekmail.imap.cluster}): each
a site with its own listeners, mail store and counts over the same realm
and Maildirs, joined by a real AMP socketpair, so that a session really
moves (its socket crosses by SCM_RIGHTS) or is really spliced (TLS).
"""

import imaplib
import os
import socket

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from tests.imap_site import PASSWORD, Site, message
from tests.support import client_context, wait_until
from trekmail.imap import cluster, clusterlink
from trekmail.imap.cluster import Coordinator, Leases, Member



LOCALS = ["user%d" % n for n in range(6)]


def converse(port, lines, tls=False):
    """Sends C{lines} in one write and returns everything the server says until it closes."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = client_context().wrap_socket(raw) if tls else raw
    with sock:
        sock.recv(4096)
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def refusal(client, local, password=PASSWORD):
    """The server's text refusing C{client}'s login as C{local}@example.com, or C{None} if it logged in."""
    try:
        client.login("%s@example.com" % local, password)
    except imaplib.IMAP4.error as e:
        return str(e)
    return None


class ClusterTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.first = Site(self, trusted_networks="127.0.0.0/8",
                          make_cluster=lambda limits, serving: Coordinator(limits, reactor=reactor, size=2,
                                                                              serving=serving))
        self.other = Site(self, realm=self.first.realm,
                          make_cluster=lambda limits, serving: Member(limits, reactor=reactor, index=1, serving=serving))
        self.account = self.first.account(plan="nano", mailboxes=LOCALS)
        self.links = []
        self.unlinked = []
        self.link()
        self.addCleanup(self.unlink)

    def link(self):
        ours, theirs = socket.socketpair()
        for sock, make in ((ours, lambda: self.first.cluster.link(1)), (theirs, self.other.cluster.link)):
            reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX,
                                          protocol.Factory.forProtocol(self._tracked(make)))
            sock.close()

    def _tracked(self, make):
        def build():
            link = make()
            lost = defer.Deferred()
            original = link.connectionLost

            def connection_lost(reason):
                original(reason)
                lost.callback(None)

            link.connectionLost = connection_lost
            self.links.append(link)
            self.unlinked.append(lost)
            return link
        return build

    def unlink(self):
        for link in self.links:
            if link.transport is not None:
                link.transport.loseConnection()
        return defer.gatherResults(self.unlinked)

    def login(self, site, local, port="imap"):
        """An imaplib client logged in to C{local}@example.com through C{site}; call in a thread."""
        if port == "imaps":
            client = imaplib.IMAP4_SSL("127.0.0.1", site.ports[port], ssl_context=client_context(), timeout=10)
        else:
            client = imaplib.IMAP4("127.0.0.1", site.ports[port], timeout=10)
        client.login("%s@example.com" % local, PASSWORD)
        return client

    def use(self, client):
        """A few commands that need the session's folder state: what a moved session must still do."""
        self.assertEqual(client.select("INBOX")[0], "OK")
        self.assertEqual(client.append("INBOX", None, None, message())[0], "OK")
        self.assertEqual(client.store("1", "+FLAGS", "(\\Flagged)")[0], "OK")
        return client.fetch("1", "(FLAGS)")[1]

    def until(self, condition):
        """Waits (on the real reactor) until C{condition()} holds: a client's close does not wait for the server."""
        def check():
            if condition():
                loop.stop()
        loop = task.LoopingCall(check)
        return loop.start(0.01)

    def serving(self, site, local):
        return "%s@example.com" % local in site.store._accounts

    def owned(self, site, local):
        """C{local}'s first session, logged in through C{site}, which makes it the mailbox's owner; call in a thread."""
        client = self.login(site, local)
        self.assertTrue(self.serving(site, local), "the first login's process owns the mailbox")
        return client

    @defer.inlineCallbacks
    def check_moved(self, port, kept):
        local = LOCALS[0]
        holder = yield self.first.in_thread(self.owned, self.first, local)
        client = yield self.first.in_thread(self.login, self.other, local, port)
        flags = yield self.first.in_thread(self.use, client)
        self.assertIn(b"\\Flagged", flags[0])
        self.assertTrue(self.serving(self.first, local), "the owner serves the session")
        self.assertFalse(self.serving(self.other, local))
        self.assertEqual(self.other.limits.counts, kept, "what the accepting process still holds")
        self.assertEqual(self.first.limits.counts[("account", self.account.id)], 2)
        self.assertEqual(dict(self.first.limits.counts)[("all",)], 2)
        yield self.first.in_thread(lambda: (client.logout(), holder.logout()))
        yield self.until(lambda: not self.first.limits.counts and not self.other.limits.counts)
        self.assertEqual(self.first.limits.admissions, {})

    def test_plain_session_moves_its_socket_to_the_owner(self):
        return self.check_moved("imap", {})

    def test_tls_session_is_spliced_to_the_owner(self):
        return self.check_moved("imaps", {("all",): 2})

    @defer.inlineCallbacks
    def test_commands_pipelined_behind_login_follow_the_session(self):
        holder = yield self.first.in_thread(self.owned, self.first, LOCALS[1])
        lines = [b"a LOGIN %s@example.com \"%s\"" % (LOCALS[1].encode(), PASSWORD.encode()),
                 b"b SELECT INBOX", b"c NOOP", b"d LOGOUT"]
        for tls in (False, True):
            port = self.other.ports["imaps" if tls else "imap"]
            said = yield self.first.in_thread(converse, port, lines, tls)
            tagged = [line.split(b" ")[:2] for line in said.split(b"\r\n") if line[:1] in b"abcd" and line]
            self.assertEqual(tagged, [[b"a", b"OK"], [b"b", b"OK"], [b"c", b"OK"], [b"d", b"OK"]], (tls, said))
        self.assertFalse(self.serving(self.other, LOCALS[1]), "they were served by the owner")
        yield self.first.in_thread(holder.logout)

    @defer.inlineCallbacks
    def test_the_first_login_picks_the_owner_until_the_mailbox_is_closed(self):
        local = LOCALS[0]
        held = yield self.first.in_thread(self.owned, self.other, local)
        moved = yield self.first.in_thread(self.login, self.first, local, "imaps")
        self.assertFalse(self.serving(self.first, local), "the first process hands it over too")
        yield self.first.in_thread(self.use, moved)
        flags = yield self.first.in_thread(lambda: (held.select("INBOX"), held.fetch("1", "(FLAGS)"))[1][1])
        self.assertIn(b"\\Flagged", flags[0], "both sessions share one folder state")
        address = "%s@example.com" % local
        self.assertEqual(self.first.cluster.leases.owner(address, 0), 1)
        yield self.first.in_thread(lambda: (held.logout(), moved.logout()))
        yield self.until(lambda: self.first.cluster.leases.owner(address, 0) == 0)
        self.assertFalse(self.serving(self.other, local), "the lease ended once the owner had closed it")
        again = yield self.first.in_thread(self.owned, self.first, local)
        flags = yield self.first.in_thread(lambda: (again.select("INBOX"), again.fetch("1", "(FLAGS)"))[1][1])
        self.assertIn(b"\\Flagged", flags[0], "the new owner loaded what the last one wrote back")
        yield self.first.in_thread(again.logout)

    @defer.inlineCallbacks
    def test_owner_out_of_reach_refuses_the_login_and_keeps_the_session(self):
        held = yield self.first.in_thread(self.owned, self.other, LOCALS[3])
        yield self.unlink()
        client = yield self.first.in_thread(imaplib.IMAP4, "127.0.0.1", self.first.ports["imap"], timeout=10)
        self.assertIn("[UNAVAILABLE]", (yield self.first.in_thread(refusal, client, LOCALS[3])))
        self.assertEqual(self.first.limits.admissions, {}, "the refused login's admission went back")
        ok = yield self.first.in_thread(client.login, "%s@example.com" % LOCALS[0], PASSWORD)
        self.assertEqual(ok[0], "OK", "the same connection logs in to a mailbox no other process has open")
        yield self.first.in_thread(client.logout)
        self.first.cluster.ended(1)
        again = yield self.first.in_thread(self.owned, self.first, LOCALS[3])
        yield self.first.in_thread(lambda: (again.logout(), held.shutdown()))

    @defer.inlineCallbacks
    def test_owner_at_its_connection_total_refuses_the_session(self):
        holder = yield self.first.in_thread(self.owned, self.first, LOCALS[0])
        self.first.limits.total = 0
        client = yield self.first.in_thread(imaplib.IMAP4, "127.0.0.1", self.other.ports["imap"], timeout=10)
        self.assertIn("[UNAVAILABLE]", (yield self.first.in_thread(refusal, client, LOCALS[0])))
        yield self.until(lambda: len(self.first.limits.admissions) == 1)
        ok = yield self.first.in_thread(client.login, "%s@example.com" % LOCALS[3], PASSWORD)
        self.assertEqual(ok[0], "OK", "the socket stayed with the accepting process, whole")
        self.assertTrue(self.serving(self.other, LOCALS[3]))
        yield self.first.in_thread(lambda: (client.logout(), holder.logout()))

    def placing_port(self):
        """The first process's listener as it is with other processes: it places what it accepts."""
        port = reactor.listenTCP(0, cluster.Placing(self.first.cluster, "imap", self.first.factories["imap"]),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_a_new_connection_goes_to_the_process_serving_fewer(self):
        port = self.placing_port()
        busy = yield self.first.in_thread(imaplib.IMAP4, "127.0.0.1", self.first.ports["imap"], timeout=10)
        placed = yield self.first.in_thread(imaplib.IMAP4, "127.0.0.1", port, timeout=10)
        self.assertEqual((self.first.limits.held(), self.other.limits.held()), (1, 1))
        yield self.first.in_thread(placed.login, "%s@example.com" % LOCALS[0], PASSWORD)
        self.assertTrue(self.serving(self.other, LOCALS[0]), "served, and owned, where it was placed")
        yield self.first.in_thread(lambda: (placed.logout(), busy.logout()))

    @defer.inlineCallbacks
    def test_a_connection_the_other_process_cannot_take_is_served_here(self):
        self.other.limits.total = 0
        port = self.placing_port()
        busy = yield self.first.in_thread(imaplib.IMAP4, "127.0.0.1", self.first.ports["imap"], timeout=10)
        placed = yield self.first.in_thread(imaplib.IMAP4, "127.0.0.1", port, timeout=10)
        yield self.first.in_thread(placed.login, "%s@example.com" % LOCALS[0], PASSWORD)
        self.assertTrue(self.serving(self.first, LOCALS[0]))
        self.assertEqual(self.other.limits.held(), 0)
        yield self.first.in_thread(lambda: (placed.logout(), busy.logout()))

    def test_a_socket_other_than_the_one_sent_closes_the_link(self):
        """If AMP ever paired a message with the wrong descriptor, no session may get it."""
        link = self.links[0]
        sent, other = socket.socketpair()
        self.addCleanup(sent.close)
        self.addCleanup(other.close)
        fields = clusterlink._arguments(sent.fileno(), socket.AF_UNIX, listener="imap")
        fields["descriptor"] = os.dup(other.fileno())
        self.assertRaises(clusterlink.Unavailable, clusterlink._received, link, fields)
        return self.unlinked[0]

    @defer.inlineCallbacks
    def test_failed_logins_count_across_processes(self):
        def fail(site):
            client = imaplib.IMAP4("127.0.0.1", site.ports["imap"], timeout=10)
            try:
                return refusal(client, LOCALS[0], "wrong")
            finally:
                client.shutdown()
        for site in (self.other, self.first, self.other):
            self.assertIn("[AUTHENTICATIONFAILED]", (yield self.first.in_thread(fail, site)))
        records = self.first.cluster.guard.throttle._records
        yield wait_until(lambda: records["127.0.0.1"].failures == 3)
        self.first.cluster.guard.throttle.block("127.0.0.1", self.first.cluster.guard.clock.seconds())
        self.assertFalse(self.other.cluster.guard.blocked("127.0.0.1"), "not known there yet")
        answer = yield self.first.in_thread(fail, self.other)
        self.assertIn("[UNAVAILABLE]", answer, "counted before the check, so refused before the check")
        self.assertTrue(self.other.cluster.guard.blocked("127.0.0.1"),
                        "the first process's verdict is remembered where the login was tried")
        self.assertEqual(self.first.cluster.guard._running, {}, "nothing left in progress")

    @defer.inlineCallbacks
    def test_plan_caps_count_every_process_and_a_lost_process_gives_its_back(self):
        total = 10  # nano's cap per client address, and every client here is 127.0.0.1
        held = []
        for n in range(total):
            site = (self.first, self.other)[n % 2]
            local = LOCALS[n % 6]
            held.append((yield self.first.in_thread(self.login, site, local, ("imap", "imaps")[n % 3 == 0])))

        client = yield self.first.in_thread(imaplib.IMAP4, "127.0.0.1", self.other.ports["imap"], timeout=10)
        self.assertIn("Maximum connections exceeded", (yield self.first.in_thread(refusal, client, LOCALS[0])))
        by_member = sum(1 for _, holder in self.first.limits.admissions.values() if holder == 1)
        self.assertEqual(by_member, sum(1 for n in range(total) if n % 2 == 1), "user1, 3 and 5 first logged in there")
        yield self.unlink()
        self.assertEqual(self.first.limits.counts[("account", self.account.id)], total - by_member)
        yield self.first.in_thread(lambda: [client.logout() for client in held])


class LeaseTests(unittest.TestCase):
    def test_first_asker_owns_until_released_with_no_session_on_its_way(self):
        leases = Leases()
        self.assertEqual(leases.take("a@x", 1, 10), 1)
        self.assertEqual(leases.take("a@x", 0, 11), 1, "later logins go to the owner")
        self.assertEqual(leases.owner("b@x", 0), 0, "a mailbox no one has open goes to whoever asks")
        leases.drop(10)
        leases.release("a@x", 1)
        self.assertEqual(leases.owner("a@x", 0), 1, "a session is still on its way: the owner keeps it")
        leases.release("a@x", 0)
        leases.drop(11)
        leases.drop(11)
        self.assertEqual(leases.owner("a@x", 0), 1, "only the owner's release ends the lease")
        leases.release("a@x", 1)
        self.assertEqual(leases.owner("a@x", 0), 0)

    def test_an_ended_process_gives_back_its_leases_and_late_dismissals_are_harmless(self):
        leases = Leases()
        leases.take("a@x", 1, 10)
        leases.take("b@x", 0, 11)
        leases.ended(1)
        self.assertEqual(leases.owner("a@x", 0), 0)
        self.assertEqual(leases.take("a@x", 0, 12), 0)
        leases.drop(10)
        leases.release("a@x", 0)
        self.assertEqual(leases.owner("a@x", 1), 0, "the late dismissal did not count against the new lease")
        self.assertEqual(leases.owner("b@x", 1), 0)
