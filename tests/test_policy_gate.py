"""
The sending gate and the From rules as pure functions of facts and time.
"""

import dataclasses
import email.utils
import datetime

from twisted.internet.task import Clock
from twisted.trial import unittest

from trekmail.policy import gate, sender
from trekmail.realm.model import Account, Domain, Mailbox, MailboxContext

REGISTERED = datetime.date(2026, 3, 1)
GRACE_END = datetime.datetime(2026, 3, 8, tzinfo=datetime.timezone.utc).timestamp()


def context(plan="starter", **account):
    values = dict(id=1, owner_email="owner@example.net", owner_verified=True, registered=REGISTERED,
                  plan=plan, paid=True, suspension=None)
    values.update(account)
    return MailboxContext(
        Mailbox("alice@example.com", "example.com", "x", False),
        Domain("example.com", 1, 0.0, "dkim", "key"),
        Account(**values),
    )


class GateTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(GRACE_END - 1)

    def kind(self, ctx):
        denial = gate.denial(ctx, self.clock.seconds())
        return None if denial is None else denial.kind

    def test_grace_period(self):
        ctx = context(owner_verified=False)
        self.assertIsNone(self.kind(ctx))
        self.clock.advance(1)
        self.assertEqual(self.kind(ctx), gate.UNVERIFIED)
        self.assertIsNone(self.kind(context(owner_verified=True)))

    def test_grandfathered(self):
        self.clock.advance(100 * 86400)
        self.assertIsNone(self.kind(context(owner_verified=False, registered=datetime.date(2026, 2, 18))))
        self.assertEqual(self.kind(context(owner_verified=False, registered=datetime.date(2026, 2, 19))),
                         gate.UNVERIFIED)

    def test_nano(self):
        self.assertEqual(self.kind(context("nano")), gate.NO_ROUTE)
        self.assertEqual(self.kind(context("nano", default_route="managed")), gate.NO_ROUTE)
        self.assertIsNone(self.kind(context("nano", default_route="profile:3")))
        self.assertIsNone(self.kind(context("starter")))

    def test_suspension_texts(self):
        for reason, text in gate.SUSPENSION_TEXTS.items():
            denial = gate.denial(context(suspension=reason), self.clock.seconds())
            self.assertEqual(denial.kind, gate.SUSPENDED)
            self.assertIn(text, denial.text)

    def test_paused(self):
        ctx = context()
        ctx = dataclasses.replace(ctx, mailbox=dataclasses.replace(ctx.mailbox, paused=True))
        self.assertEqual(self.kind(ctx), gate.PAUSED)

    def test_order_of_the_ten_checks(self):
        self.clock.advance(1)
        everything = context("nano", owner_verified=False, suspension="billing")
        self.assertEqual(self.kind(everything), gate.UNVERIFIED)
        self.assertEqual(self.kind(context("nano", suspension="billing")), gate.NO_ROUTE)


class SenderTests(unittest.TestCase):
    def test_envelope(self):
        self.assertIsNone(sender.envelope_denial("Alice@Example.com", "alice@example.com"))
        self.assertEqual(sender.envelope_denial("bob@example.com", "alice@example.com").kind, sender.ENVELOPE)

    def check(self, headers):
        return sender.header_from_denial(headers + b"\r\nFrom: body@example.com\r\n", "alice@example.com")

    def test_header_from(self):
        self.assertIsNone(self.check(b"From: Alice <ALICE@example.com>\r\nTo: b@x.test\r\n"))
        self.assertIsNone(self.check(b"Subject: x\r\nfrom:\r\n  \"A\" <alice@example.com>\r\n"))
        for headers in [
            b"From: bob@example.com\r\n",
            b"From: alice@example.com\r\nFROM: bob@example.com\r\n",
            b"From: alice@example.com, bob@example.com\r\n",
            b"Subject: no from\r\n",
            b"From:\r\n",
            b"From: \"alice@example.com\" <bob@example.com>\r\n",
        ]:
            self.assertEqual(getattr(self.check(headers), "kind", None), sender.HEADER, headers)

    def test_from_in_body_ignored(self):
        message = b"To: x@y.test\r\n\r\nFrom: alice@example.com\r\n"
        self.assertEqual(sender.header_from_denial(message, "alice@example.com").kind, sender.HEADER)

    def test_simple_forms_read_as_the_general_parser_reads_them(self):
        """
        The regular-expression path for common From values must agree with
        email.utils on every value, taken or passed on.
        """
        values = [
            "a@b.example", " a@b.example ", "Alice <a@b.example>", "\tAlice\t<a@b.example>\t",
            "<a@b.example>", "Alice Q. Public <a.q@b.example>", "=?utf-8?q?J=C3=B6rg?= <j@x.example>",
            "o'brien@x.example", '"Doe, Alice" <a@b.example>', "Doe, Alice <a@b.example>",
            "a@b.example, c@d.example", "Alice (work) <a@b.example>", '"a\\"b" <x@y.example>',
            "a..b@c.example", "x <a@b.example> y", "Group: a@b.example;", '"q"@x.example',
            "a@[192.0.2.1]", "J\u00f6rg <j@x.example>", "Alice <a@b.example", "", "<>",
        ]
        for value in values:
            expected = [a for _, a in email.utils.getaddresses([value]) if a]
            self.assertEqual(sender.from_addresses(value), expected, value)
        for value in values[:8]:
            self.assertIsNotNone(sender._SIMPLE_FROM.fullmatch(value), value)
