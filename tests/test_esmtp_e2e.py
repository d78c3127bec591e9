"""
CHUNKING and SMTPUTF8 end to end: smtplib over real sockets and real TLS
against the MX and both submission listeners (BDAT written by hand, as
smtplib has no BDAT; SMTPUTF8 through smtplib's own C{mail_options}), a
mailbox 用户@例子.测试 made with the CLI, and the relay client against
Postfix's smtp-sink, which offers no SMTPUTF8, so the downgrade rule
meets a real peer.
"""

import base64
import glob
import io
import json
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from bench import benchlib
from tests import support
from tests.fakes import FakeQueue
from tests.server_process import free_port
from tests.smtp_site import PASSWORD, Site, client_context
from trekmail import settings
from trekmail.cli import main
from trekmail.realm import database
from trekmail.realm.directory import SqliteDirectory
from trekmail.relay import client
from trekmail.smtp.mx import MXFactory, MXServer

IDN = "例子.测试"
A_LABELS = "xn--fsqu00a.xn--0zwm56d"
MESSAGE = b"From: <x@remote.test>\r\nSubject: chunks\r\n\r\nfirst line\r\n.\r\nafter a lone dot\r\n"


def bdat(client, *chunks, last=True):
    """Send C{chunks} as BDATs in one write (the last one LAST unless not C{last}), pipelined; their replies."""
    wire = b"".join(b"BDAT %d%s\r\n%s" % (len(c), b" LAST" if last and i == len(chunks) - 1 else b"", c)
                    for i, c in enumerate(chunks))
    client.send(wire)
    return [client.getreply() for _ in chunks]


def listen_mx(testcase):
    """
    Our MX on a loopback port over a real sqlite realm with example.com
    and 例子.测试 (mailboxes alice@, 用户@ and info@): C{(port, queue)}.
    """
    config, admin, _ = support.realm(testcase)
    record = support.example(admin)
    admin.domain_add(IDN, record.id)
    for local in ("用户", "info"):
        admin.mailbox_add("%s@%s" % (local, IDN), "strong password 1")
    threaded = database.ThreadedDatabase(database.connect(config.database_path), reactor)
    threaded.start()
    testcase.addCleanup(threaded.stop)
    queue = FakeQueue()
    factory = MXFactory(directory=SqliteDirectory(threaded), queue=queue, clock=reactor,
                        hostname="mx.test", tls_options=settings.tls_options(config))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, queue


class MXTests(unittest.TestCase):
    def setUp(self):
        self.port, self.queue = listen_mx(self)
        self.clients = ThreadPool(minthreads=0, maxthreads=4, name="esmtp-test-clients")
        self.clients.start()
        self.addCleanup(self.clients.stop)

    def in_thread(self, function):
        return threads.deferToThreadPool(reactor, self.clients, function)

    def connect(self):
        connection = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        connection.starttls(context=client_context())
        connection.ehlo("remote.test")
        return connection

    @defer.inlineCallbacks
    def test_bdat_after_starttls(self):
        def run():
            connection = self.connect()
            try:
                offered = connection.has_extn("chunking"), connection.has_extn("binarymime")
                connection.mail("x@remote.test")
                connection.rcpt("alice@example.com")
                sent = bdat(connection, MESSAGE[:30], MESSAGE[30:40], MESSAGE[40:])
                connection.mail("x@remote.test")
                connection.rcpt("alice@example.com")
                mixed = bdat(connection, b"Subject: t\r\n\r\n", last=False)[0], connection.docmd("DATA")
                connection.rset()
                return offered, sent, mixed, connection.noop()
            finally:
                connection.close()

        offered, sent, mixed, after = yield self.in_thread(run)
        self.assertEqual(offered, (True, False))
        self.assertEqual([code for code, _ in sent], [250, 250, 250])
        self.assertTrue(sent[-1][1].startswith(b"2.0.0 OK: queued as"))
        self.assertEqual(mixed[1][0], 503)
        self.assertEqual(after[0], 250)
        self.assertEqual(len(self.queue.messages), 1)
        envelope, message = self.queue.messages[0]
        self.assertEqual(message, MESSAGE)
        self.assertIn(b"with ESMTPS id", self.queue.traces[0])

    @defer.inlineCallbacks
    def test_bdat_past_the_size_limit(self):
        self.patch(MXServer, "max_message_size", 5000)

        def run():
            connection = self.connect()
            try:
                connection.mail("x@remote.test")
                connection.rcpt("alice@example.com")
                refused = bdat(connection, b"Subject: big\r\n\r\n", b"y" * 4000 + b"\r\n", b"z" * 4000 + b"\r\n",
                               b"QUIT\r\n")
                return refused, connection.noop()
            finally:
                connection.close()

        refused, after = yield self.in_thread(run)
        self.assertEqual([code for code, _ in refused], [250, 250, 552, 503])
        self.assertEqual(after[0], 250)
        self.assertEqual(self.queue.messages, [])

    @defer.inlineCallbacks
    def test_smtputf8_to_an_internationalised_mailbox(self):
        def run():
            connection = self.connect()
            try:
                offered = connection.has_extn("smtputf8")
                refused = connection.sendmail("发件人@例子.测试", ["用户@" + IDN, "nobody@" + IDN],
                                              "Subject: 你好\r\n\r\nhi\r\n".encode(), mail_options=["SMTPUTF8"])
                unflagged = connection.docmd("MAIL FROM:<x@remote.test>"), connection.docmd("RCPT TO:<用户@%s>" % (IDN,))
                connection.rset()
                plain = connection.sendmail("x@remote.test", ["info@" + A_LABELS.upper()], b"Subject: a\r\n\r\n")
                return offered, refused, unflagged, plain
            finally:
                connection.close()

        offered, refused, unflagged, plain = yield self.in_thread(run)
        self.assertEqual(offered, True)
        self.assertEqual(list(refused), ["nobody@" + IDN])
        self.assertEqual((unflagged[1][0], unflagged[1][1][:5]), (553, b"5.6.7"))
        self.assertEqual(plain, {})
        (envelope, _), (second, _) = self.queue.messages
        self.assertEqual((envelope.sender, envelope.recipients), ("发件人@" + A_LABELS, ("用户@" + A_LABELS,)))
        self.assertEqual(second.recipients, ("info@" + A_LABELS,))
        self.assertIn("with UTF8SMTPS id", self.queue.traces[0].decode("utf-8"))
        self.assertIn("with ESMTPS id", self.queue.traces[1].decode("utf-8"))


class SubmissionTests(unittest.TestCase):
    def setUp(self):
        self.site = Site(self)
        self.site.account()
        self.site.admin.domain_add(IDN, 1)
        self.site.admin.mailbox_add("用户@" + IDN, PASSWORD)

    @defer.inlineCallbacks
    def test_bdat_on_both_listeners(self):
        def run(port):
            connection = self.site.connect(port, login="alice@example.com")
            try:
                connection.mail("alice@example.com")
                connection.rcpt("bob@remote.test")
                return bdat(connection, b"From: alice@example.com\r\nTo: bob@remote.test\r\n",
                            b"Subject: chunked\n\nbare LF lines\n")
            finally:
                connection.close()

        for port in ("submissions", "submission"):
            replies = yield self.site.in_thread(run, port)
            self.assertEqual([code for code, _ in replies], [250, 250], port)
        self.assertEqual(len(self.site.queue.messages), 2)
        for _, message in self.site.queue.messages:
            self.assertTrue(message.endswith(b"Subject: chunked\r\n\r\nbare LF lines\r\n"))

    @defer.inlineCallbacks
    def test_bdat_gets_the_refusal_data_would(self):
        """Past the plan's recipients per message, every BDAT of the transaction is refused as DATA is."""
        self.site.account(owner="trial@example.net", domain="trial.test", trial=True)

        def run():
            connection = self.site.connect("submissions", login="alice@trial.test")
            try:
                connection.mail("alice@trial.test")
                rcpts = [connection.rcpt("r%d@remote.test" % (i,))[0] for i in range(11)]
                return rcpts, bdat(connection, b"Subject: x\r\n", b"\r\nhi\r\n"), connection.noop()
            finally:
                connection.close()

        rcpts, refused, after = yield self.site.in_thread(run)
        self.assertEqual(rcpts, [250] * 10 + [550])
        self.assertEqual([(code, text[:5]) for code, text in refused], [(550, b"5.5.3")] * 2)
        self.assertEqual(after[0], 250)
        self.assertEqual(self.site.queue.messages, [])

    @defer.inlineCallbacks
    def test_internationalised_login_and_send(self):
        def run():
            connection = self.site.connect("submissions")
            try:
                login = base64.b64encode(("\0用户@%s\0%s" % (IDN, PASSWORD)).encode("utf-8")).decode("ascii")
                logged_in = connection.docmd("AUTH PLAIN " + login)
                refused = connection.sendmail("用户@" + IDN, ["δοκιμή@παράδειγμα.δοκιμή"],
                                              ("From: 用户@%s\r\nSubject: 你好\r\n\r\nhi\r\n" % (IDN,)).encode(),
                                              mail_options=["SMTPUTF8"])
                return logged_in, refused
            finally:
                connection.close()

        logged_in, refused = yield self.site.in_thread(run)
        self.assertEqual((logged_in[0], refused), (235, {}))
        envelope, _ = self.site.queue.messages[0]
        self.assertEqual(envelope.sender, "用户@" + A_LABELS)
        self.assertEqual(envelope.recipients, ("δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp",))


class CLITests(unittest.TestCase):
    def test_mailbox_add_with_u_labels(self):
        config = support.write_config(self.mktemp())

        def cli(*argv, stdin=""):
            out, err = io.StringIO(), io.StringIO()
            code = main(["--config", config] + list(argv), io.StringIO(stdin), out, err)
            self.assertEqual((code, err.getvalue()), (0, ""), out.getvalue())
            return out.getvalue()

        cli("account", "add", "owner@example.net", "--plan", "starter", "--verified")
        cli("domain", "add", IDN, "--account", "1")
        cli("mailbox", "add", "用户@" + IDN.upper(), "--password-stdin", stdin="strong password 1\n")
        listed = json.loads(cli("--json", "mailbox", "list", "--domain", A_LABELS))
        self.assertEqual([m["address"] for m in listed], ["用户@" + A_LABELS])


SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class SmtpSinkRelayTests(unittest.TestCase):
    """Postfix's smtp-sink (bin/test installs postfix) as a next hop that offers no SMTPUTF8."""

    def setUp(self):
        self.dumps = os.path.abspath(self.mktemp())
        os.makedirs(self.dumps)
        os.chmod(os.path.dirname(self.dumps), 0o755)  # trial's is 0700; the sink runs as postfix
        shutil.chown(self.dumps, "postfix")
        self.port = free_port()
        sink = subprocess.Popen([SMTP_SINK, "-u", "postfix", "-d", os.path.join(self.dumps, "%M."),
                                 "127.0.0.1:%d" % (self.port,), "10"])
        self.addCleanup(sink.wait)
        self.addCleanup(sink.terminate)
        return support.wait_until(lambda: _listening(self.port))

    @defer.inlineCallbacks
    def test_a_labels_go_and_utf8_local_parts_fail(self):
        jobs = [client.Job("sender@example.com", ("用户@" + A_LABELS, "info@" + A_LABELS),
                           b"Subject: t\r\n\r\nhi\r\n")]
        done = jobs[0].done
        yield client.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), b"relay.test",
                             lambda: jobs.pop() if jobs else None, remote="sink.test")
        results = {o.recipient: o for o in (yield done)}
        self.assertEqual(results["info@" + A_LABELS].code, 250)
        refused = results["用户@" + A_LABELS]
        self.assertEqual((refused.code, refused.status, refused.reply), (553, "5.6.7", False))
        self.assertIn("sink.test does not offer SMTPUTF8", refused.text)
        dumps = glob.glob(os.path.join(self.dumps, "*"))
        self.assertEqual(len(dumps), 1)
        with open(dumps[0], "rb") as f:
            dumped = f.read()
        self.assertIn(b"X-Mail-Args: <sender@example.com>\n", dumped)
        self.assertIn(b"X-Rcpt-Args: <info@%s>\n" % (A_LABELS.encode(),), dumped)
        self.assertEqual(dumped.count(b"X-Rcpt-Args"), 1)


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


class PostfixTests(unittest.TestCase):
    """
    A private Postfix (bin/test installs postfix; L{bench.benchlib.Postfix},
    which offers SMTPUTF8 and CHUNKING as Postfix does by default) between
    our relay client and our MX: both of our sides of SMTPUTF8 meet a real
    peer, Postfix's server and Postfix's client.
    """

    def setUp(self):
        mx_port, self.queue = listen_mx(self)
        base = tempfile.mkdtemp(prefix="trekmail-postfix-")  # short: Postfix's socket paths must fit in 108 bytes
        os.chmod(base, 0o755)
        self.addCleanup(shutil.rmtree, base, True)
        self.postfix_port = free_port()
        postfix = benchlib.Postfix(_Cleanups(self), Path(base), self.postfix_port, mx_port)
        return threads.deferToThread(postfix.start)

    @defer.inlineCallbacks
    def test_utf8_through_postfix_into_our_mx(self):
        jobs = [client.Job("sender@example.net", ("用户@" + A_LABELS,), "Subject: 你好\r\n\r\nhi\r\n".encode())]
        done = jobs[0].done
        connection = yield client.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", self.postfix_port), b"relay.test",
                                          lambda: jobs.pop() if jobs else None, remote="postfix.test")
        self.assertTrue(connection.smtputf8)
        [outcome] = yield done
        self.assertEqual(outcome.code, 250, outcome.text)
        yield support.wait_until(lambda: self.queue.messages, timeout=30)
        envelope, message = self.queue.messages[0]
        self.assertEqual((envelope.sender, envelope.recipients), ("sender@example.net", ("用户@" + A_LABELS,)))
        self.assertIn("with UTF8SMTP id", self.queue.traces[0].decode("utf-8"))
        self.assertIn("Subject: 你好\r\n".encode(), message)


class _Cleanups:
    """What L{bench.benchlib.Postfix} pushes its stop onto: the test's cleanups."""

    def __init__(self, testcase):
        self.push = testcase.addCleanup
