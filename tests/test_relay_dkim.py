"""
Our DKIM signer against dkimpy's verifier: canonicalization edge cases
(folded headers, trailing and repeated whitespace, empty bodies, bodies of
only CRLFs, missing final CRLF, bare LF, 8-bit bytes, 1 MiB), tampering,
and the key cache and signature reuse of L{Signer}.
"""

import base64
import os
import random

import dkim
from dkim.canonicalization import Relaxed
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.trial import unittest

from trekmail.delivery import wire_form
from trekmail.realm import dkimkeys
from trekmail.relay import dkim as signer

SIGNED_AT = 1700000000
"""The C{t=} of the signatures made here (the signer is given its clock)."""

HEADERS = (
    b"From: Alice <alice@example.com>\r\nTo: bob@remote.test\r\nSubject: hello\r\n"
    b"Date: Sat, 21 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
)

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
)


def txt_record(key):
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return dkimkeys.txt_value(base64.b64encode(der).decode("ascii")).encode("ascii")


def verifies(data, key=_KEY):
    record = txt_record(key)
    return dkim.verify(data, dnsfunc=lambda name, timeout=5: record)


class CanonicalizationTests(unittest.TestCase):
    def check(self, message):
        data = signer.sign(message, "example.com", "dkim", PEM, SIGNED_AT)
        self.assertTrue(data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;"))
        self.assertTrue(data.endswith(wire_form(message)))
        self.assertTrue(verifies(data), message[:200])
        return data

    def test_plain(self):
        data = self.check(HEADERS + b"\r\nHello,\r\nbye\r\n")
        self.assertFalse(verifies(data.replace(b"bye", b"BYE")))
        self.assertFalse(verifies(data.replace(b"Subject: hello", b"Subject: Hello")))

    def test_signed_headers(self):
        data = self.check(HEADERS + b"\r\nx\r\n")
        header = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
        self.assertIn(b"h=from : from : subject : subject : date : date : to : to : message-id : message-id;", header)
        self.assertIn(b"s=dkim;", header)

    def test_added_from_breaks_the_signature(self):
        data = self.check(HEADERS + b"\r\nx\r\n")
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertFalse(verifies(head + b"\r\nFrom: mallory@evil.test\r\n\r\n" + body))

    def test_absent_header_is_not_signed(self):
        data = self.check(b"From: alice@example.com\r\nSubject: hi\r\n\r\nx\r\n")
        self.assertIn(b"h=from : from : subject : subject;", data)
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertTrue(verifies(head + b"\r\nMessage-ID: <added@relay.test>\r\nDate: Sat,"
                                 b" 21 Nov 2026 12:00:00 +0000\r\n\r\n" + body))

    def test_second_instance_of_a_singleton_breaks_the_signature(self):
        data = self.check(HEADERS + b"Cc: carol@remote.test\r\n\r\nx\r\n")
        head, body = data.split(b"\r\n\r\n", 1)
        for added in (b"Subject: pay now", b"To: mallory@evil.test", b"Cc: mallory@evil.test",
                      b"Date: Sun, 22 Nov 2026 12:00:00 +0000", b"Message-ID: <2@example.com>"):
            self.assertFalse(verifies(head + b"\r\n" + added + b"\r\n\r\n" + body), added)
        self.assertTrue(verifies(head + b"\r\nList-Id: <list.remote.test>\r\n\r\n" + body))

    def test_rfc_6376_recommended_fields_are_signed(self):
        fields = (
            b"Reply-To: a@example.com", b"Cc: c@remote.test", b"In-Reply-To: <0@remote.test>",
            b"References: <0@remote.test>", b"MIME-Version: 1.0", b"Content-Type: text/plain",
            b"Content-Transfer-Encoding: 7bit", b"Resent-From: r@example.com", b"List-Id: <l.example.com>",
        )
        data = self.check(HEADERS + b"".join(f + b"\r\n" for f in fields) + b"\r\nx\r\n")
        for field in fields:
            name, value = field.split(b": ", 1)
            self.assertFalse(verifies(data.replace(field, name + b": " + value + b"x")), field)
        names = data.split(b" h=", 1)[1].split(b";", 1)[0].replace(b"\r\n ", b" ").split(b" : ")
        self.assertEqual(names.count(b"from"), 2)
        self.assertEqual((names.count(b"cc"), names.count(b"resent-from"), names.count(b"list-id")), (2, 1, 1))

    def test_repeated_resent_fields_are_each_signed(self):
        data = self.check(HEADERS + b"Resent-To: a@remote.test\r\nResent-To: b@remote.test\r\n\r\nx\r\n")
        self.assertFalse(verifies(data.replace(b"Resent-To: a@", b"Resent-To: z@")))
        self.assertFalse(verifies(data.replace(b"Resent-To: b@", b"Resent-To: z@")))

    def test_folded_headers(self):
        self.check(
            b"From: Alice\r\n  <alice@example.com>\r\nTo: bob@remote.test,\r\n\tcarol@remote.test\r\n"
            b"Subject: a\r\n long\r\n\t\tsubject   \r\nDate: Sat, 21 Nov 2026 12:00:00 +0000\r\n\r\nx\r\n"
        )

    def test_whitespace_in_header_values(self):
        self.check(b"From:alice@example.com\r\nSubject:   many \t spaces\t \r\nTo:  bob@remote.test \r\n\r\nx\r\n")

    def test_trailing_and_repeated_whitespace_in_body(self):
        self.check(HEADERS + b"\r\nline  \t \r\n  two\t\tspaces  here \r\n \r\n\t\r\nend\r\n \t \r\n")

    def test_empty_body(self):
        self.check(HEADERS + b"\r\n")
        self.check(HEADERS)

    def test_body_of_only_crlfs(self):
        self.check(HEADERS + b"\r\n\r\n")
        self.check(HEADERS + b"\r\n" + b"\r\n" * 50)

    def test_body_without_final_crlf(self):
        self.check(HEADERS + b"\r\nno final line end")
        self.check(HEADERS + b"\r\ntrailing space ")

    def test_bare_line_feeds(self):
        self.check(HEADERS.replace(b"\r\n", b"\n") + b"\nunix\nlines\n\n\n")

    def test_eight_bit_bytes(self):
        self.check(HEADERS.replace(b"hello", b"caf\xc3\xa9 \xff") + b"\r\n\x80\xff\xfe caf\xc3\xa9  \x00\r\n")

    def test_one_mebibyte(self):
        line = b"The quick  brown\tfox jumps over the lazy dog. \r\n"
        data = self.check(HEADERS + b"\r\n" + line * ((1 << 20) // len(line)))
        self.assertFalse(verifies(data[:-3] + b"X\r\n"))

    def test_malformed_header_is_refused(self):
        e = self.assertRaises(signer.UnsignableMessage, signer.sign, b"no colon here\r\n\r\nx\r\n",
                              "example.com", "dkim", PEM, SIGNED_AT)
        self.assertTrue(e.permanent)
        self.assertIn("malformed header line 'no colon here'", str(e))
        self.assertNotIn("key", str(e))

    def test_body_canonicalization_matches_dkimpy(self):
        pieces = [b" ", b"\t", b"  ", b"\r\n", b"a", b"\xff", b"\r\n\r\n", b"x y", b" \r\n"]
        rng = random.Random(6376)
        for _ in range(2000):
            body = wire_form(b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12))))
            if body == b"\r\n":
                body = b""
            self.assertEqual(signer.canonical_body(body), Relaxed.canonicalize_body(body), body)


class KeyTests(unittest.TestCase):
    def test_not_rsa(self):
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.assertRaises(signer.SigningError, signer.sign, HEADERS + b"\r\nx\r\n", "example.com", "dkim", pem, SIGNED_AT)

    def test_damaged(self):
        n = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
        damaged = rsa.RSAPrivateNumbers(n.p, n.q, n.d + 2, n.dmp1 + 2, n.dmq1, n.iqmp, n.public_numbers)
        pem = damaged.private_key(unsafe_skip_rsa_key_validation=True).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        self.assertRaises(signer.SigningError, signer.sign, HEADERS + b"\r\nx\r\n", "example.com", "dkim", pem, SIGNED_AT)

    def test_garbage(self):
        self.assertRaises(signer.SigningError, signer.sign, HEADERS + b"\r\nx\r\n", "example.com", "dkim", b"junk", SIGNED_AT)


class SignerTests(unittest.TestCase):
    def setUp(self):
        self.data_dir = self.mktemp()
        os.makedirs(os.path.join(self.data_dir, "dkim"))
        self.signer = signer.Signer(self.data_dir, lambda: SIGNED_AT)
        self.message = wire_form(HEADERS + b"\r\nhello\r\n")

    def publish(self):
        public = dkimkeys.generate(self.data_dir, "example.com")
        return ("v=DKIM1; k=rsa; p=%s" % (public,)).encode("ascii")

    def verify(self, data, record):
        return dkim.verify(data, dnsfunc=lambda name, timeout=5: record)

    def test_signature_is_stamped_by_the_given_clock(self):
        record = self.publish()
        header = self.signer.signature(self.message, "example.com", "dkim").header
        self.assertIn(b" t=%d;" % (SIGNED_AT,), header)
        self.assertTrue(self.verify(header + self.message, record))

    def test_missing_key(self):
        e = self.assertRaises(signer.KeyMissing, self.signer.signature, self.message, "example.com", "dkim")
        self.assertFalse(e.permanent)
        self.assertIn("DKIM key of example.com (selector dkim) is missing", str(e))

    def test_unusable_key_is_not_reported_missing(self):
        with open(dkimkeys.key_path(self.data_dir, "example.com"), "wb") as f:
            f.write(b"junk")
        e = self.assertRaises(signer.SigningError, self.signer.signature, self.message, "example.com", "dkim")
        self.assertNotIsInstance(e, signer.KeyMissing)
        self.assertIn("DKIM key of example.com: unusable DKIM key", str(e))

    def test_malformed_message_with_a_good_key(self):
        self.publish()
        e = self.assertRaises(signer.UnsignableMessage, self.signer.signature,
                              b" Subject: x\r\n\r\nbody\r\n", "example.com", "dkim")
        self.assertIn("cannot DKIM-sign: malformed header line", str(e))

    def test_signature_kept_until_the_key_changes(self):
        record = self.publish()
        first = self.signer.signature(self.message, "example.com", "dkim")
        self.assertTrue(self.verify(first.header + self.message, record))
        self.assertIs(self.signer.signature(self.message, "example.com", "dkim", first), first)
        path = dkimkeys.key_path(self.data_dir, "example.com")
        stamp = os.stat(path).st_mtime_ns
        record = self.publish()
        os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
        second = self.signer.signature(self.message, "example.com", "dkim", first)
        self.assertIsNot(second, first)
        self.assertTrue(self.verify(second.header + self.message, record))
        self.assertFalse(self.verify(first.header + self.message, record))

    def test_sign(self):
        record = self.publish()
        self.assertTrue(self.verify(self.signer.sign(b"From: a@example.com\n\nbody\n", "example.com", "dkim"), record))
