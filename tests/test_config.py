import os

from twisted.trial import unittest

from trekmail.config import Config, ConfigError

from tests.support import REPO


class ConfigTests(unittest.TestCase):
    def test_defaults_parse(self):
        config = Config.defaults()
        self.assertEqual(config.get("relay", "mx_port"), 25)
        self.assertEqual(config.get("realm", "backend"), "sqlite")
        self.assertEqual(config.database_path, "var/trekmail.sqlite")

    def test_shipped_file_is_valid(self):
        config = Config.from_file(os.path.join(REPO, "etc", "trekmail.ini"))
        self.assertEqual(config.get("listen", "submissions"), "tcp:10465:interface=127.0.0.1")

    def test_unknown_key_is_named(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_text("[server]\nhostnme = x\n")
        self.assertEqual(str(caught.exception), "[server] hostnme: unknown key")

    def test_unknown_section_is_named(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_text("[sever]\nhostname = x\n")
        self.assertEqual(str(caught.exception), "[sever]: unknown section")

    def test_bad_value_is_named(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_text("[relay]\nmx_port = twenty-five\n")
        self.assertIn("[relay] mx_port:", str(caught.exception))

    def test_dkim_keys(self):
        config = Config.from_text("[dkim]\ncname_zone = DKIM.Provider.example.\noverlap_days = 2\n")
        self.assertEqual((config.get("dkim", "cname_zone"), config.get("dkim", "overlap_days")),
                         ("dkim.provider.example", 2))
        for bad in ("cname_zone = not a zone", "cname_zone = localhost", "overlap_days = 0"):
            with self.assertRaises(ConfigError) as caught:
                Config.from_text("[dkim]\n%s\n" % (bad,))
            self.assertIn("[dkim] %s:" % (bad.split()[0],), str(caught.exception))

    def test_bad_choice_is_named(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_text("[realm]\nbackend = postgres\n")
        self.assertIn("[realm] backend: expected one of sqlite, ldap", str(caught.exception))

    def test_unparsable_file(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_text("no section header\n")
        self.assertEqual(len(str(caught.exception).splitlines()), 1)

    def test_missing_file(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_file(self.mktemp())
        self.assertIn("cannot read", str(caught.exception))

    def test_nameservers_and_pools(self):
        config = Config.from_text(
            "[dns]\nnameservers = 127.0.0.1:5353 [::1]:53 10.0.0.1\n"
            "[relay]\nsource_pools = warm:127.0.0.2 127.0.0.3; new:127.0.0.4\n"
        )
        self.assertEqual(
            config.get("dns", "nameservers"),
            (("127.0.0.1", 5353), ("::1", 53), ("10.0.0.1", 53)),
        )
        self.assertEqual(
            config.get("relay", "source_pools"),
            {"warm": ("127.0.0.2", "127.0.0.3"), "new": ("127.0.0.4",)},
        )

    def test_bad_pool(self):
        with self.assertRaises(ConfigError) as caught:
            Config.from_text("[relay]\nsource_pools = 127.0.0.2\n")
        self.assertIn("[relay] source_pools", str(caught.exception))

    def test_imap_processes(self):
        self.assertEqual(Config.defaults().get("imap", "processes"), 1)
        self.assertEqual(Config.from_text("[imap]\nprocesses = 64\n").get("imap", "processes"), 64)
        self.assertEqual(Config.from_text("[imap]\nprocesses = auto\n").get("imap", "processes"),
                         len(os.sched_getaffinity(0)))
        self.patch(os, "sched_getaffinity", lambda pid: set(range(96)))
        self.assertEqual(Config.from_text("[imap]\nprocesses = auto\n").get("imap", "processes"), 64,
                         "auto on a host with more cores than allowed takes the most allowed")
        for bad in ("0", "65", "x"):
            with self.assertRaises(ConfigError) as caught:
                Config.from_text("[imap]\nprocesses = %s\n" % bad)
            self.assertIn("[imap] processes:", str(caught.exception))
