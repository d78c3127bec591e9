"""
The admin API refuses before it reads: a wrong or undecodable token, or a
body over L{api.MAX_BODY}, is answered as soon as the headers are in,
with nothing of the body kept, driven over a L{StringTransport}.
"""

import json

from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from trekmail.admin import api

TOKEN = "test-token-0123456789"


class Unreachable:
    def call(self, verb, **kwargs):
        raise AssertionError("a refused request reached the verb %s" % (verb,))


class RefusedEarlyTests(unittest.TestCase):
    def connect(self):
        channel = api.site(Unreachable(), TOKEN).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        return channel, transport

    def headers(self, *lines, method=b"POST"):
        return b"%s /accounts HTTP/1.1\r\nHost: admin\r\n%s\r\n" % (method, b"".join(l + b"\r\n" for l in lines))

    def assertRefused(self, transport, status):
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 %d " % (status,)), transport.value())
        self.assertIn("error", json.loads(body))
        self.assertTrue(transport.disconnecting)

    def test_wrong_token_refused_before_the_body(self):
        channel, transport = self.connect()
        channel.dataReceived(self.headers(b"Authorization: Bearer wrong", b"Content-Length: 1000000000"))
        self.assertRefused(transport, 401)
        answered = transport.value()
        channel.dataReceived(b"x" * 100000)
        self.assertEqual(transport.value(), answered)

    def test_no_token_with_chunked_body(self):
        channel, transport = self.connect()
        channel.dataReceived(self.headers(b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n")
        self.assertRefused(transport, 401)

    def test_non_utf8_authorization(self):
        channel, transport = self.connect()
        channel.dataReceived(self.headers(b"Authorization: Bearer \xff\xfe\x80", method=b"GET"))
        self.assertRefused(transport, 401)

    def test_declared_length_over_the_limit(self):
        channel, transport = self.connect()
        channel.dataReceived(self.headers(
            b"Authorization: Bearer " + TOKEN.encode(), b"Content-Length: %d" % (api.MAX_BODY + 1,),
            b"Expect: 100-continue"))
        self.assertRefused(transport, 413)
        self.assertNotIn(b"100 Continue", transport.value())

    def test_chunked_body_over_the_limit(self):
        channel, transport = self.connect()
        channel.dataReceived(self.headers(b"Authorization: Bearer " + TOKEN.encode(), b"Transfer-Encoding: chunked"))
        self.assertEqual(transport.value(), b"")
        chunk = b"x" * 4096
        for _ in range(api.MAX_BODY // len(chunk) + 1):
            channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.assertRefused(transport, 413)
        answered = transport.value()
        channel.dataReceived(b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
        self.assertEqual(transport.value(), answered)


class DepthTests(unittest.TestCase):
    def test_linear_scan(self):
        self.assertFalse(api.too_deep(b'{"a": [[1, {"b": "[[[[[[["}]]}', limit=4))
        self.assertTrue(api.too_deep(b'{"a": [[1, {"b": [[]]}]]}', limit=4))
        self.assertFalse(api.too_deep(b'["\\"[[[[[[["]', limit=1))
        self.assertTrue(api.too_deep(b"[" * 100000))
