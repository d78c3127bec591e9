from twisted.trial import unittest

from trekmail.plans import PLANS, TRIAL_CAPS, UnknownPlan, plan_named, sending_caps


class PlanTableTests(unittest.TestCase):
    """The tables of docs/sending-rules.md ("Plans and limits", "Trial and verification"), row by row."""

    def test_sending_rows(self):
        rows = {
            "nano": (200, 400, 50, 50),
            "starter": (1000, 6000, 500, 100),
            "pro": (2000, 15000, 1500, 250),
            "agency": (2500, 40000, 3000, 500),
        }
        for name, row in rows.items():
            caps = PLANS[name].managed
            self.assertEqual(
                (caps.per_mailbox_day, caps.per_account_day, caps.per_account_hour, caps.recipients_per_message),
                row,
            )

    def test_imap_caps(self):
        self.assertEqual(
            {name: (p.imap_per_ip, p.imap_total) for name, p in PLANS.items()},
            {"nano": (10, 15), "starter": (25, 40), "pro": (50, 80), "agency": (100, 150)},
        )

    def test_managed_eligibility(self):
        self.assertEqual(
            {name: p.managed_sending for name, p in PLANS.items()},
            {"nano": False, "starter": True, "pro": True, "agency": True},
        )

    def test_trial(self):
        self.assertEqual(
            (TRIAL_CAPS.per_mailbox_day, TRIAL_CAPS.per_account_day, TRIAL_CAPS.per_account_hour,
             TRIAL_CAPS.recipients_per_message),
            (30, 50, 15, 10),
        )

    def test_caps_by_route(self):
        starter = plan_named("Starter")
        self.assertIs(sending_caps(starter, True, True), starter.managed)
        self.assertIs(sending_caps(starter, True, False), TRIAL_CAPS)
        byo = sending_caps(starter, False, True)
        self.assertEqual((byo.per_mailbox_day, byo.recipients_per_message), (None, 100))
        nano = plan_named("nano")
        self.assertEqual(sending_caps(nano, False, True).per_account_day, 400)

    def test_unknown(self):
        with self.assertRaises(UnknownPlan) as caught:
            plan_named("gold")
        self.assertIn("nano, starter, pro, agency", str(caught.exception))
