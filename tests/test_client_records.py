"""
C{domain dns} lists the records that let clients find the server (RFC
6186, RFC 8314, RFC 6764 SRV records; the autoconfig / autodiscover
names), with the ports the listeners bind and "0 0 0 ." for a service
that is not offered.
"""

from twisted.trial import unittest

from tests.support import realm
from trekmail.settings import listen_port

LISTENERS = """
[listen]
submissions = tcp:10465:interface=127.0.0.1
imaps = ssl:port=10993:privateKey=k.pem
https = tcp:interface=127.0.0.1:port=10443
"""


def records(testcase, extra):
    config, admin, clock = realm(testcase, extra=extra)
    account = admin.account_add("o@example.net", "pro")
    admin.domain_add("example.com", account.id)
    return {(name, kind): value for name, kind, value in admin.domain_dns("example.com")}


class ClientRecordTests(unittest.TestCase):
    def test_srv_records_name_the_bound_ports(self):
        found = records(self, LISTENERS)
        self.assertEqual(found[("_submissions._tcp.example.com", "SRV")], "0 1 10465 mail.test.")
        self.assertEqual(found[("_imaps._tcp.example.com", "SRV")], "0 1 10993 mail.test.")
        self.assertEqual(found[("_caldavs._tcp.example.com", "SRV")], "0 1 10443 mail.test.")
        self.assertEqual(found[("_carddavs._tcp.example.com", "SRV")], "0 1 10443 mail.test.")
        self.assertEqual(found[("_autodiscover._tcp.example.com", "SRV")], "0 1 10443 mail.test.")

    def test_services_not_offered_say_so(self):
        found = records(self, LISTENERS)
        self.assertEqual(found[("_submission._tcp.example.com", "SRV")], "0 0 0 .")
        self.assertEqual(found[("_imap._tcp.example.com", "SRV")], "0 0 0 .")

    def test_autoconfig_names_point_at_the_server(self):
        found = records(self, LISTENERS)
        self.assertEqual(found[("autoconfig.example.com", "CNAME")], "mail.test.")
        self.assertEqual(found[("autodiscover.example.com", "CNAME")], "mail.test.")

    def test_without_https_no_autoconfig_names(self):
        found = records(self, "")
        self.assertNotIn(("autoconfig.example.com", "CNAME"), found)
        self.assertEqual(found[("_caldavs._tcp.example.com", "SRV")], "0 0 0 .")
        self.assertEqual(found[("_submissions._tcp.example.com", "SRV")], "0 0 0 .")

    def test_listen_port(self):
        for description, expected in [("tcp:465", 465), ("tcp:port=587:interface=::1", 587),
                                      ("ssl:993:privateKey=key.pem", 993), ("systemd:domain=INET:index=0", 443),
                                      ("", None), ("unix:/run/x.sock", 443)]:
            self.assertEqual(listen_port(description, 443), expected, description)
