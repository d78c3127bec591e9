from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, reactor
from twisted.trial import unittest

from trekmail.crypto import hash_password, verify_password
from trekmail.realm import store
from trekmail.realm.checkers import MailboxPasswordChecker, normalise_address
from trekmail.realm.database import ThreadedDatabase
from trekmail.realm.directory import SqliteDirectory
from trekmail.realm.errors import DirectoryUnavailable

from tests.fakes import FakeDirectory
from tests.support import example, realm


class CheckerTests(unittest.TestCase):
    def setUp(self):
        self.config, self.admin, self.clock = realm(self)
        example(self.admin)
        self.threaded = ThreadedDatabase(self.admin.db, reactor)
        self.threaded.start()
        self.addCleanup(self.threaded.stop)
        self.checker = MailboxPasswordChecker(SqliteDirectory(self.threaded), reactor, scrypt_n=1024)

    def login(self, username, password):
        return self.checker.requestAvatarId(UsernamePassword(username, password))

    @defer.inlineCallbacks
    def test_full_address(self):
        self.assertEqual((yield self.login(b"Alice@Example.com", b"correct horse")), "alice@example.com")

    @defer.inlineCallbacks
    def test_failures_look_the_same(self):
        for username, password in [
            (b"alice", b"correct horse"),
            (b"bob@example.com", b"correct horse"),
            (b"alice@example.com", b"wrong"),
            (b"", b""),
            (b"\xff@example.com", b"x"),
        ]:
            with self.assertRaises(UnauthorizedLogin):
                yield self.login(username, password)

    @defer.inlineCallbacks
    def test_paused_mailbox_still_authenticates(self):
        self.admin.mailbox_pause("alice@example.com")
        self.assertEqual((yield self.login(b"alice@example.com", b"correct horse")), "alice@example.com")

    @defer.inlineCallbacks
    def test_password_reset_applies_at_once(self):
        yield self.login(b"alice@example.com", b"correct horse")
        self.admin.mailbox_passwd("alice@example.com", "battery staple")
        with self.assertRaises(UnauthorizedLogin):
            yield self.login(b"alice@example.com", b"correct horse")
        self.assertEqual((yield self.login(b"alice@example.com", b"battery staple")), "alice@example.com")

    @defer.inlineCallbacks
    def test_rehash_when_parameters_change(self):
        store.mailbox_set_password_hash(self.admin.db, "alice@example.com", hash_password("pw", n=2048))
        yield self.login(b"alice@example.com", b"pw")
        stored = store.mailbox_get(self.admin.db, "alice@example.com").password_hash
        self.assertTrue(stored.startswith("{SCRYPT}n=1024,"))

    @defer.inlineCallbacks
    def test_legacy_scheme_is_upgraded(self):
        import base64, hashlib
        value = "{SSHA}" + base64.b64encode(hashlib.sha1(b"pw" + b"salt").digest() + b"salt").decode()
        store.mailbox_set_password_hash(self.admin.db, "alice@example.com", value)
        yield self.login(b"alice@example.com", b"pw")
        stored = store.mailbox_get(self.admin.db, "alice@example.com").password_hash
        self.assertTrue(stored.startswith("{SCRYPT}"))

    @defer.inlineCallbacks
    def test_outage_is_not_a_wrong_password(self):
        directory = FakeDirectory()
        directory.unavailable = True
        checker = MailboxPasswordChecker(directory, reactor, scrypt_n=1024)
        with self.assertRaises(DirectoryUnavailable):
            yield checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"x"))

    @defer.inlineCallbacks
    def test_unknown_names_cost_one_hash_like_a_wrong_password(self):
        """Timing must not tell which mailboxes exist: every failure pays one scrypt at the configured cost."""
        import threading
        from trekmail.realm import checkers
        calls = []

        def counting(password, stored, wanted_n):
            calls.append((stored, threading.current_thread().name))
            return verify_password(password, stored, wanted_n)
        self.patch(checkers, "verify_password", counting)
        real = store.mailbox_get(self.admin.db, "alice@example.com").password_hash
        for username in (b"nobody@example.com", b"alice", b"", b"alice@example.com"):
            del calls[:]
            with self.assertRaises(UnauthorizedLogin):
                yield self.login(username, b"wrong")
            self.assertEqual(len(calls), 1, username)
            self.assertEqual(calls[0][0].split("$")[0], real.split("$")[0], "same scrypt parameters")
            self.assertIn("trekmail-password-hash", calls[0][1], "its own pool, not the reactor's")

    @defer.inlineCallbacks
    def test_hashing_pool_is_bounded(self):
        """Forty logins at once hash on at most C{hash_threads} threads."""
        import threading
        import time
        from trekmail.realm import checkers
        lock, running, most = threading.Lock(), [0], [0]

        def slow(password, stored, wanted_n):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.01)
            with lock:
                running[0] -= 1
            return False, False
        self.patch(checkers, "verify_password", slow)
        checker = MailboxPasswordChecker(SqliteDirectory(self.threaded), reactor, scrypt_n=1024, hash_threads=2)
        attempts = [checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"x")) for _ in range(40)]
        results = yield defer.DeferredList(attempts, consumeErrors=True)
        self.assertTrue(all(not ok and f.check(UnauthorizedLogin) for ok, f in results))
        self.assertEqual(most[0], 2)
        self.assertEqual(len(checker.hashing.threads), 2)


class NormaliseTests(unittest.TestCase):
    def test_forms(self):
        self.assertEqual(normalise_address(" Alice@Example.COM "), "alice@example.com")
        self.assertIsNone(normalise_address("alice"))
        self.assertIsNone(normalise_address("@example.com"))
        self.assertIsNone(normalise_address("a b@example.com"))
