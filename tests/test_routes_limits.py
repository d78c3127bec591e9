"""
Limits and refusals by route (docs/sending-rules.md, "Limits by route" and check 4):
managed follows the plan, a profile the plan's BYO row (the Nano row on
Nano), the recipient cap always; an unconfigured or paused route refuses
with a text that says what to do.
"""

import dataclasses

from twisted.trial import unittest

from tests import support
from trekmail.policy import gate, limits
from trekmail.realm import routes, store
from trekmail.realm.profiles import ProfileAdministration
from trekmail.crypto import SecretKeyring

LATER = support.NOON + 30 * 86400


def context_for(testcase, plan, route=None, paid=True):
    config, admin, clock = support.realm(testcase)
    account = support.example(admin, plan=plan, trial=not paid)
    if route == "profile":
        profiles = ProfileAdministration(admin.db, clock, SecretKeyring.load(config.secret_key_path))
        profile = profiles.profile_add(account.id, "sg", "smtp.sendgrid.net", 587, "starttls", "apikey", "x")
        profiles.route_set("example.com", profile.route)
    return store.mailbox_context(admin.db, "alice@example.com")


class LimitsByRouteTests(unittest.TestCase):
    def test_managed_follows_the_plan(self):
        caps = limits.caps_for(context_for(self, "pro"), LATER)
        self.assertEqual((caps.per_mailbox_day, caps.per_account_day, caps.per_account_hour,
                          caps.recipients_per_message), (2000, 15000, 1500, 250))

    def test_profile_route_on_paid_plan_has_only_the_recipient_cap(self):
        caps = limits.caps_for(context_for(self, "starter", "profile"), LATER)
        self.assertEqual((caps.per_mailbox_day, caps.per_account_day, caps.per_account_hour), (None, None, None))
        self.assertEqual(caps.recipients_per_message, 100)

    def test_profile_route_on_nano_follows_the_nano_row(self):
        context = context_for(self, "nano", "profile")
        caps = limits.caps_for(context, LATER)
        self.assertEqual(dataclasses.astuple(caps), (200, 400, 50, 50))
        self.assertIsNone(gate.denial(context, LATER))
        self.assertIsNotNone(limits.recipients_denial(caps, 51))


class RefusalTests(unittest.TestCase):
    def test_unconfigured_nano_domain_is_told_to_pick_a_route(self):
        denial = gate.denial(context_for(self, "nano"), LATER)
        self.assertEqual(denial.kind, gate.NO_ROUTE)
        self.assertIn("pick one", denial.text)

    def test_nano_on_managed_is_paused_with_the_reason(self):
        context = context_for(self, "nano")
        context = dataclasses.replace(context, domain=dataclasses.replace(context.domain, route=routes.MANAGED))
        self.assertIn("paused", gate.denial(context, LATER).text)

    def test_resolution_order(self):
        context = context_for(self, "starter")
        account = dataclasses.replace(context.account, default_route="profile:9")
        self.assertEqual(str(routes.resolve_route(context.domain, account)), "profile:9")
        domain = dataclasses.replace(context.domain, route="managed")
        self.assertEqual(str(routes.resolve_route(domain, account)), "managed")
        self.assertEqual(str(routes.resolve_route(context.domain, context.account)), "managed")
