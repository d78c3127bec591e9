"""
The mail log of a real C{twistd -n trekmail}: a message submitted with
smtplib and delivered to a local mailbox, then followed with C{trekmail
log trace QUEUE_ID --file} on the server's own log.
"""

import smtplib
from io import StringIO

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.server_process import ServerProcess, free_port
from tests.support import client_context, example_server, write_config
from trekmail import cli

PASSWORD = "correct horse"


def _submit(port):
    with smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.example", context=client_context(),
                          timeout=30) as c:
        c.login("alice@example.com", PASSWORD)
        c.mail("alice@example.com")
        c.rcpt("alice@example.com")
        code, reply = c.data(b"From: alice@example.com\r\nMessage-ID: <e2e@example.com>\r\n\r\nhi\r\n")
    return code, reply.decode("ascii").rsplit(" ", 1)[1]


class TraceTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_submitted_message_is_traced_from_the_log(self):
        port = free_port()
        path = write_config(self.mktemp(), submissions="tcp:%d:interface=127.0.0.1" % (port,))
        example_server(path, password=PASSWORD)
        server = ServerProcess(self, path)
        yield server.start([port])
        code, queue_id = yield threads.deferToThread(_submit, port)
        self.assertEqual(code, 250)
        yield server.wait_for_log("%s: to=<alice@example.com>" % (queue_id,))
        out, err = StringIO(), StringIO()
        self.assertEqual(cli.main(["log", "trace", queue_id, "--file", server.log_path], stdout=out, stderr=err),
                         0, err.getvalue())
        traced = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
        self.assertEqual(len(traced), 3, out.getvalue())
        self.assertRegex(traced[0], r"^%s: accepted from=<alice@example.com> client=client.example\[127.0.0.1\] "
                                    r"user=alice@example.com size=\d+ nrcpt=1 msgid=<e2e@example.com> "
                                    r"listener=submissions$" % (queue_id,))
        self.assertEqual(traced[1], "%s: stored mailbox=<alice@example.com> folder=INBOX" % (queue_id,))
        self.assertRegex(traced[2], r'^%s: to=<alice@example.com> route=local relay=local source=- tls=- '
                                    r'verified=no delay=\d+\.\d outcome=delivered reply="250 2.0.0 delivered to '
                                    r'mailbox"$' % (queue_id,))
        self.assertIn("login smtp alice@example.com [127.0.0.1] ok", server.log())
        self.assertNotIn(PASSWORD, server.log())
