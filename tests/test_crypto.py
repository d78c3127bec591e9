import base64
import crypt
import hashlib

from twisted.trial import unittest

from trekmail import crypto


class PasswordHashTests(unittest.TestCase):
    def test_scrypt_round_trip(self):
        stored = crypto.hash_password("s3cret", n=1024)
        self.assertTrue(stored.startswith("{SCRYPT}n=1024,r=8,p=1$"))
        self.assertEqual(crypto.verify_password("s3cret", stored, 1024), (True, False))
        self.assertEqual(crypto.verify_password("S3cret", stored, 1024), (False, False))

    def test_salted(self):
        self.assertNotEqual(crypto.hash_password("x", n=1024), crypto.hash_password("x", n=1024))

    def test_default_is_owasp(self):
        self.assertEqual(crypto.OWASP_SCRYPT_N, 2**17)

    def test_changed_parameters_ask_for_rehash(self):
        stored = crypto.hash_password("s3cret", n=1024)
        self.assertEqual(crypto.verify_password("s3cret", stored, 2048), (True, True))

    def test_ssha(self):
        salt = b"saltsalt"
        value = "{SSHA}" + base64.b64encode(hashlib.sha1(b"pw" + salt).digest() + salt).decode()
        self.assertEqual(crypto.verify_password("pw", value), (True, True))
        self.assertEqual(crypto.verify_password("px", value), (False, False))

    def test_ssha512(self):
        salt = b"12345678"
        value = "{SSHA512}" + base64.b64encode(hashlib.sha512(b"pw" + salt).digest() + salt).decode()
        self.assertEqual(crypto.verify_password("pw", value), (True, True))

    def test_crypt_sha512_and_yescrypt(self):
        for salt in ("$6$abcdefgh", "$y$j9T$abcdefghijklmnop"):
            value = "{CRYPT}" + crypt.crypt("pw", salt)
            self.assertEqual(crypto.verify_password("pw", value), (True, True))
            self.assertEqual(crypto.verify_password("pq", value), (False, False))

    def test_unknown_scheme_fails(self):
        self.assertEqual(crypto.verify_password("pw", "{PLAIN}pw"), (False, False))
        self.assertEqual(crypto.verify_password("pw", "pw"), (False, False))

    def test_garbage_scrypt_value_fails(self):
        self.assertEqual(crypto.verify_password("pw", "{SCRYPT}n=x"), (False, False))
