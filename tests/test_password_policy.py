"""
The password policy (trekmail/policy/passwords.py) and its use by the
realm's verbs: C{mailbox add} and C{mailbox passwd} refuse a short or a
common password with a sentence saying why, through the CLI and the
admin API alike (both call L{Administration}).
"""

from twisted.trial import unittest

from tests.support import example, realm
from trekmail.policy.passwords import MIN_LENGTH, common_passwords, password_problem
from trekmail.realm import store
from trekmail.realm.errors import InvalidInput

STRONG = "violet staple orbit"


class PolicyTests(unittest.TestCase):
    def test_strong_passwords_pass(self):
        for password in (STRONG, "x" * 9 + "Y", "ünïcode pässwörd"):
            self.assertIsNone(password_problem(password), password)

    def test_too_short(self):
        self.assertIn("at least 10 characters", password_problem("x" * (MIN_LENGTH - 1)))

    def test_common_passwords_refused_whatever_their_case(self):
        for password in ("qwertyuiop", "1234567890", "Password123", "  1q2w3e4r5t  ", "QWERTYUIOP", "Welcome2026"):
            self.assertIn("most common passwords", password_problem(password) or "", password)

    def test_empty_and_too_long(self):
        self.assertEqual(password_problem(""), "the password is empty")
        self.assertEqual(password_problem(" " * 12), "the password is empty")
        self.assertIn("longer than 1024", password_problem("x" * 1025))

    def test_the_list_is_lowercase_and_long_enough_to_matter(self):
        listed = common_passwords()
        self.assertGreater(len(listed), 500)
        self.assertTrue(all(entry == entry.lower() and len(entry) >= MIN_LENGTH for entry in listed))


class RealmVerbTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, self.clock = realm(self)
        example(self.admin)

    def test_mailbox_add_refuses_weak_passwords(self):
        for password, message in (("short", "too short"), ("password123", "most common")):
            error = self.assertRaises(InvalidInput, self.admin.mailbox_add, "bob@example.com", password)
            self.assertIn(message, str(error))
        self.assertIsNone(store.mailbox_find(self.admin.db, "bob@example.com"))

    def test_mailbox_passwd_refuses_weak_passwords(self):
        before = store.mailbox_get(self.admin.db, "alice@example.com").password_hash
        error = self.assertRaises(InvalidInput, self.admin.mailbox_passwd, "alice@example.com", "qwertyuiop")
        self.assertIn("most common", str(error))
        self.assertEqual(store.mailbox_get(self.admin.db, "alice@example.com").password_hash, before)
        self.admin.mailbox_passwd("alice@example.com", STRONG)
        self.assertNotEqual(store.mailbox_get(self.admin.db, "alice@example.com").password_hash, before)
