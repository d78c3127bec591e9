"""
The connection caps of a real C{twistd -n trekmail} over 127.0.0.1: the
MX refuses an address's connection past C{[mx] max_connections_per_ip}
with 421, and takes one again once a held connection closes.
"""

import smtplib

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.server_process import ServerProcess, free_port
from tests.support import write_config

PER_IP = 3


def _connections(port, count):
    """C{count} held sessions, then what the next connection is told."""
    held = [smtplib.SMTP("127.0.0.1", port, timeout=10) for _ in range(count)]
    try:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=10).quit()
            refusal = None
        except smtplib.SMTPConnectError as e:
            refusal = (e.smtp_code, e.smtp_error)
    finally:
        held.pop().quit()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as again:
            after_close = again.noop()[0]
    finally:
        for session in held:
            session.quit()
    return refusal, after_close


class MXCapTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_per_address_cap_refuses_the_next_connection(self):
        port = free_port()
        config = write_config(self.mktemp(), "[mx]\nmax_connections_per_ip = %d\n" % (PER_IP,),
                              mx="tcp:%d:interface=127.0.0.1" % (port,))
        yield ServerProcess(self, config).start([port])
        refusal, after_close = yield threads.deferToThread(_connections, port, PER_IP)
        self.assertEqual(refusal, (421, b"4.7.0 too many connections, try again later"))
        self.assertEqual(after_close, 250)
