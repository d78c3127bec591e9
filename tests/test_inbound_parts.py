"""
The inbound checks' parts without a server: removal of forged
Authentication-Results, the DMARC record and From parsing,
organizational domains, and lookups that never reach the system's DNS.
"""

import spf
from twisted.trial import unittest

from trekmail.inbound import authresults, dmarc
from trekmail.inbound import spf as spfcheck
from trekmail.inbound.dkimcheck import DKIMResult
from trekmail.inbound.lookups import Lookups, TemporaryDNSError
from trekmail.inbound.spf import SPFResult


class WithoutOursTests(unittest.TestCase):
    def test_folded_forgery_removed_others_kept(self):
        message = (b"Received: from x\r\nAuthentication-Results: Mail.Test;\r\n\tspf=pass\r\n"
                   b"Authentication-Results: mail.test.evil; spf=pass\r\nSubject: s\r\n\r\n"
                   b"Authentication-Results: mail.test; in the body\r\n")
        self.assertEqual(authresults.without_ours(message, "mail.test"),
                         b"Received: from x\r\nAuthentication-Results: mail.test.evil; spf=pass\r\nSubject: s\r\n\r\n"
                         b"Authentication-Results: mail.test; in the body\r\n")

    def test_version_and_comment_before_the_id(self):
        message = b"Authentication-Results: (forged) mail.test 1; dkim=pass\r\nSubject: s\r\n\r\nbody\r\n"
        self.assertEqual(authresults.without_ours(message, "mail.test"), b"Subject: s\r\n\r\nbody\r\n")

    def test_message_without_ours_is_returned_as_it_is(self):
        message = b"Subject: s\r\n\r\nbody\r\n"
        self.assertIs(authresults.without_ours(message, "mail.test"), message)

    def test_values_from_the_message_cannot_break_the_field(self):
        field = authresults.field(
            "mail.test", SPFResult("pass", "a;b@x.test\r\nX-Evil: 1", "x.test"), SPFResult("none", "h(x)", "h"),
            [DKIMResult("pass", "d.test", "s", "abc")], dmarc.DMARCResult("none", ""), "none")
        self.assertNotIn(b"\r\nX-Evil", field)
        self.assertIn(b"smtp.mailfrom=ab@x.testX-Evil:1;", field)
        self.assertIn(b"smtp.helo=hx;", field)


class DMARCPartsTests(unittest.TestCase):
    def test_organizational_domain_from_the_public_suffix_list(self):
        self.assertEqual(dmarc.organizational_domain("a.b.example.co.uk"), "example.co.uk")
        self.assertEqual(dmarc.organizational_domain("Mail.Example.COM."), "example.com")

    def test_header_from_needs_exactly_one_address(self):
        self.assertEqual(dmarc.header_from_domain(b"From: A <a@Example.COM>\r\n\r\n"), "example.com")
        self.assertIsNone(dmarc.header_from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n"))
        self.assertIsNone(dmarc.header_from_domain(b"From: a@x.test, b@y.test\r\n\r\n"))
        self.assertIsNone(dmarc.header_from_domain(b"Subject: none\r\n\r\n"))

    def test_record_must_start_with_its_version(self):
        self.assertEqual(dmarc.parse_record("v=DMARC1; p=reject; adkim=s")["adkim"], "s")
        self.assertIsNone(dmarc.parse_record("p=reject; v=DMARC1"))
        self.assertIsNone(dmarc.parse_record("v=DMARC1; junk"))


class NoSystemDNSTests(unittest.TestCase):
    def test_no_nameservers_is_a_temporary_error(self):
        self.assertRaises(TemporaryDNSError, Lookups(()).txt, "example.com")

    def test_pyspf_lookup_outside_a_check_never_asks_the_system(self):
        self.assertIs(spf.DNSLookup, spfcheck._lookup)
        self.assertRaises(spf.TempError, spf.DNSLookup, "example.com", "TXT")

    def test_spf_without_nameservers_is_temperror(self):
        mailfrom, helo = spfcheck.check(Lookups(()), "192.0.2.1", "a@example.com", "helo.example.com")
        self.assertEqual((mailfrom.result, helo.result), ("temperror", "temperror"))
