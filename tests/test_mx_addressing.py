"""
The MX's addresses that are no mailbox (docs/addressing.md): aliases fan
out to their mailboxes, C{+tag} is cut off, and a domain's catch-all
takes what nothing else matches; the queue gets the mailboxes.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from tests.fakes import FakeDirectory, FakeQueue, TLSStringTransport, replies
from tests.support import write_config
from trekmail.config import Config, ConfigError
from trekmail.realm.recipients import untagged
from trekmail.service import Components, mx_service
from trekmail.smtp.mx import MXFactory

MAILBOXES = ("alice@example.com", "bob@example.com", "carol@example.com", "ops@provider.example")


class AddressingTests(unittest.TestCase):
    def session(self, delimiter="+", catchall=None, postmaster=""):
        self.directory = FakeDirectory(["provider.example"], MAILBOXES)
        self.directory.add_domain("example.com", catchall=catchall)
        self.directory.aliases = {
            "sales@example.com": ("alice@example.com", "bob@example.com"),
            "team@example.com": ("bob@example.com",),
        }
        self.queue = FakeQueue()
        factory = MXFactory(directory=self.directory, queue=self.queue, clock=Clock(), hostname="mx.test",
                            tls_options=object(), postmaster=postmaster, recipient_delimiter=delimiter)
        self.server = factory.buildProtocol(None)
        self.transport = TLSStringTransport()
        self.server.makeConnection(self.transport)
        self.server.dataReceived(b"EHLO remote.test\r\nMAIL FROM:<someone@remote.test>\r\n")
        replies(self.transport)

    def rcpt(self, address):
        self.server.dataReceived(b"RCPT TO:<" + address.encode() + b">\r\n")
        return replies(self.transport)[-1][:9]

    def send(self):
        self.server.dataReceived(b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(replies(self.transport)[-1][:9], "250 2.0.0")
        return self.queue.messages[-1][0].recipients

    def test_alias_fans_out_to_its_mailboxes(self):
        self.session()
        self.assertEqual(self.rcpt("Sales@Example.com"), "250 2.1.5")
        self.assertEqual(self.rcpt("bob@example.com"), "250 2.1.5")
        self.assertEqual(self.send(), ("alice@example.com", "bob@example.com"))

    def test_plus_tag_is_cut_off_for_mailbox_and_alias(self):
        self.session()
        self.assertEqual(self.rcpt("alice+news@example.com"), "250 2.1.5")
        self.assertEqual(self.rcpt("team+x+y@example.com"), "250 2.1.5")
        self.assertEqual(self.send(), ("alice@example.com", "bob@example.com"))

    def test_exact_alias_before_cutting(self):
        self.session()
        self.directory.aliases["alice+vip@example.com"] = ("carol@example.com",)
        self.assertEqual(self.rcpt("alice+vip@example.com"), "250 2.1.5")
        self.assertEqual(self.send(), ("carol@example.com",))

    def test_delimiter_configurable_or_off(self):
        self.session(delimiter="-")
        self.assertEqual(self.rcpt("alice+news@example.com"), "550 5.1.1")
        self.assertEqual(self.rcpt("alice-news@example.com"), "250 2.1.5")
        self.session(delimiter="")
        self.assertEqual(self.rcpt("alice+news@example.com"), "550 5.1.1")

    def test_catch_all_only_when_nothing_else_matches(self):
        self.session(catchall="carol@example.com")
        for address in ("nobody@example.com", "alice@example.com", "sales@example.com", "alice+x@example.com"):
            self.assertEqual(self.rcpt(address), "250 2.1.5")
        self.assertEqual(self.send(), ("carol@example.com", "alice@example.com", "bob@example.com"))

    def test_catch_all_of_a_missing_mailbox_is_ignored(self):
        self.session(catchall="gone@example.com")
        self.assertEqual(self.rcpt("nobody@example.com"), "550 5.1.1")

    def test_postmaster_before_catch_all(self):
        self.session(catchall="carol@example.com", postmaster="ops@provider.example")
        self.assertEqual(self.rcpt("postmaster@example.com"), "250 2.1.5")
        self.assertEqual(self.send(), ("ops@provider.example",))

    def test_unknown_and_relay_still_refused(self):
        self.session()
        self.assertEqual(self.rcpt("nobody@example.com"), "550 5.1.1")
        self.assertEqual(self.rcpt("+news@example.com"), "550 5.1.1")
        self.assertEqual(self.rcpt("alice+news@elsewhere.test"), "550 5.7.1")

    def test_directory_unavailable_during_alias_lookup(self):
        self.session()
        self.directory.fail_on = {"sales@example.com"}
        self.assertEqual(self.rcpt("sales@example.com"), "451 4.4.3")
        self.flushLoggedErrors()


class UntaggedTests(unittest.TestCase):
    def test_cut(self):
        self.assertEqual(untagged("a+b@x.test", "+"), "a@x.test")
        self.assertEqual(untagged("a-b+c@x.test", "+-"), "a@x.test")
        self.assertIsNone(untagged("a@x.test", "+"))
        self.assertIsNone(untagged("+a@x.test", "+"))
        self.assertIsNone(untagged("a+b@x.test", ""))


class ConfigTests(unittest.TestCase):
    def test_key_reaches_the_listener(self):
        path = write_config(self.mktemp(), extra="[mx]\nrecipient_delimiter = -\n", mx="tcp:10025")
        components = Components(Config.from_file(path), MemoryReactorClock())
        self.addCleanup(components.database.db.close)
        self.assertEqual(mx_service(components, FakeQueue()).factory.wrappedFactory.recipients.delimiters, "-")

    def test_default_and_bad_values(self):
        self.assertEqual(Config.defaults().get("mx", "recipient_delimiter"), "+")
        self.assertEqual(Config.from_text("[mx]\nrecipient_delimiter =\n").get("mx", "recipient_delimiter"), "")
        for bad in ("a", "@", "+ -", "."):
            self.assertRaises(ConfigError, Config.from_text, "[mx]\nrecipient_delimiter = %s\n" % (bad,))
