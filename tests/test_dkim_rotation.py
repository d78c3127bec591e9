"""
DKIM key rotation (docs/dkim.md): the selector state machine, the
schedule that drives it under a task.Clock with DNS answered by an
in-process zone, CNAME mode, Ed25519 dual signing and the migration.
"""

import dataclasses
import os

import dkim
from twisted.internet import defer
from twisted.names import dns
from twisted.trial import unittest

from tests import support
from tests.delivery_support import Zone, txt_record
from trekmail.realm import database, dkimkeys, dkimselectors, schema, store
from trekmail.realm.dkimselectors import ACTIVE, PENDING, RETIRED, RETIRING, Selector
from trekmail.realm.errors import InvalidInput
from trekmail.relay import dkim as signer
from trekmail.relay.dkimrotation import RotationService

DAY = 86400
HOUR = 3600
MESSAGE = b"From: a@example.com\r\nTo: b@remote.test\r\nSubject: hi\r\n\r\nBody.\r\n"


class ImmediateDatabase:
    """L{ThreadedDatabase.run} on the test's own thread: the clock, not threads, orders the test."""

    def __init__(self, db):
        self.db = db

    def run(self, function, *args, **kwargs):
        return defer.maybeDeferred(function, self.db, *args, **kwargs)


class AdvanceTests(unittest.TestCase):
    """L{dkimselectors.advance}: a pure function of the selectors, what DNS shows and the time."""

    def selector(self, name, state, created=0.0, algorithm="rsa", **dates):
        return Selector("example.com", name, algorithm, "key-" + name, state, created, **dates)

    def test_pending_waits_for_dns(self):
        selectors = [self.selector("dkim", ACTIVE), self.selector("tm1", PENDING, 10.0)]
        self.assertEqual(dkimselectors.advance(selectors, set(), 100.0, DAY), [])

    def test_shown_pending_becomes_active_and_the_old_one_retires(self):
        selectors = [self.selector("dkim", ACTIVE), self.selector("tm1", PENDING, 10.0)]
        changed = {s.selector: s for s in dkimselectors.advance(selectors, {"tm1"}, 100.0, DAY)}
        self.assertEqual((changed["tm1"].state, changed["tm1"].activated_at), (ACTIVE, 100.0))
        self.assertEqual((changed["dkim"].state, changed["dkim"].retiring_at), (RETIRING, 100.0))

    def test_retiring_stays_for_the_overlap(self):
        old = self.selector("dkim", RETIRING, retiring_at=100.0)
        self.assertEqual(dkimselectors.advance([old], set(), 100.0 + DAY - 1, DAY), [])
        [retired] = dkimselectors.advance([old], set(), 100.0 + DAY, DAY)
        self.assertEqual((retired.state, retired.retired_at), (RETIRED, 100.0 + DAY))

    def test_algorithms_rotate_independently(self):
        selectors = [self.selector("dkim", ACTIVE), self.selector("tm1e", ACTIVE, algorithm="ed25519"),
                     self.selector("tm2e", PENDING, 10.0, algorithm="ed25519")]
        changed = {s.selector: s.state for s in dkimselectors.advance(selectors, {"tm2e"}, 100.0, DAY)}
        self.assertEqual(changed, {"tm2e": ACTIVE, "tm1e": RETIRING})


class RotationCase(unittest.TestCase):
    extra = ""
    zone_class = Zone

    def setUp(self):
        self.config, self.admin, self.clock = support.realm(self, extra="[dkim]\noverlap_days = 7\n" + self.extra)
        account = self.admin.account_add("owner@example.net", "starter", verified=True)
        self.admin.domain_add("example.com", account.id)
        self.zone = self.zone_class({})
        self.service = RotationService(
            database=ImmediateDatabase(self.admin.db), resolver=self.zone, clock=self.clock,
            data_dir=self.config.data_dir, settings=self.admin.settings.dkim, interval=HOUR)

    def start(self):
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def states(self):
        return {s["selector"]: s["state"] for s in self.admin.dkim_status("example.com")}

    def dkim_records(self):
        return {n: v for n, t, v in self.admin.domain_dns("example.com") if "_domainkey" in n}

    def key_file(self, selector):
        return dkimkeys.key_path(self.config.data_dir, "example.com", selector)

    def selector(self, name):
        [found] = [s for s in dkimselectors.history(self.admin.db, self.admin.domain_get("example.com"))
                   if s.selector == name]
        return found

    def publish(self, selector):
        new = self.selector(selector)
        self.zone.records[("%s._domainkey.example.com" % selector, dns.TXT)] = [
            txt_record(dkimkeys.txt_value(new.public_key, new.algorithm))]


class RotationTests(RotationCase):
    """A rotation from C{domain dkim rotate} to retirement, driven by L{RotationService} under a task.Clock."""

    def test_full_rotation(self):
        self.assertEqual(self.states(), {"dkim": ACTIVE})
        [made] = self.admin.dkim_rotate("example.com")[1:]
        new = made["selector"]
        self.assertEqual(new, "tm20261121")
        self.assertEqual(self.states(), {"dkim": ACTIVE, new: PENDING})
        self.assertEqual(set(self.dkim_records()), {"dkim._domainkey.example.com", new + "._domainkey.example.com"})
        self.start()
        self.clock.advance(HOUR)
        self.assertEqual(self.admin.domain_get("example.com").dkim_selector, "dkim", "DNS does not show it yet")

        self.publish(new)
        self.clock.advance(HOUR)
        domain = self.admin.domain_get("example.com")
        self.assertEqual((domain.dkim_selector, self.states()), (new, {"dkim": RETIRING, new: ACTIVE}))
        self.assertEqual(domain.dkim_public_key, self.selector(new).public_key)
        [old] = [s for s in self.admin.dkim_status("example.com") if s["selector"] == "dkim"]
        self.assertEqual(old["retire_at"], old["retiring_at"] + 7 * DAY)

        self.clock.advance(7 * DAY - 2 * HOUR)
        self.assertEqual(self.states()["dkim"], RETIRING)
        self.assertTrue(os.path.exists(self.key_file("dkim")))
        self.assertIn("dkim._domainkey.example.com", self.dkim_records())

        self.clock.advance(2 * HOUR)
        self.assertEqual(self.states(), {"dkim": RETIRED, new: ACTIVE})
        self.assertFalse(os.path.exists(self.key_file("dkim")))
        self.assertTrue(os.path.exists(self.key_file(new)))
        self.assertEqual(set(self.dkim_records()), {new + "._domainkey.example.com"})
        [status] = [s for s in self.admin.dkim_status("example.com") if s["selector"] == "dkim"]
        self.assertEqual(status["retired_at"], self.clock.seconds())

    def test_wrong_key_in_dns_keeps_it_pending(self):
        new = self.admin.dkim_rotate("example.com")[1]["selector"]
        self.zone.records[("%s._domainkey.example.com" % new, dns.TXT)] = [txt_record(dkimkeys.txt_value("AAAA"))]
        self.start()
        self.assertEqual(self.states()[new], PENDING)

    def test_dns_failure_keeps_it_pending_and_the_schedule_running(self):
        new = self.admin.dkim_rotate("example.com")[1]["selector"]
        self.zone.servfail.add("%s._domainkey.example.com" % new)
        self.start()
        self.assertEqual(self.states()[new], PENDING)
        self.zone.servfail.clear()
        self.publish(new)
        self.clock.advance(HOUR)
        self.assertEqual(self.states()[new], ACTIVE)

    def test_rotating_again_replaces_a_pending_key(self):
        first = self.admin.dkim_rotate("example.com")[1]["selector"]
        second = [s for s in self.admin.dkim_rotate("example.com") if s["state"] == PENDING][0]["selector"]
        self.assertEqual(second, first + "-2")
        self.assertEqual(self.states(), {"dkim": ACTIVE, first: RETIRED, second: PENDING})
        self.assertFalse(os.path.exists(self.key_file(first)))
        self.publish(first)
        self.start()
        self.assertEqual(self.states()[second], PENDING, "the replaced key's record activates nothing")

    def test_signer_follows_the_domain_row(self):
        new = self.admin.dkim_rotate("example.com")[1]["selector"]
        self.publish(new)
        self.start()
        domain = self.admin.domain_get("example.com")
        signed = signer.Signer(self.config.data_dir, self.clock.seconds).sign(
            MESSAGE, "example.com", domain.dkim_selector)
        self.assertIn(("s=%s;" % new).encode(), signed.replace(b"\r\n ", b""))
        record = dkimkeys.txt_value(domain.dkim_public_key).encode()
        self.assertTrue(dkim.verify(signed, dnsfunc=lambda name, timeout=5: record))

    def test_delete_removes_every_key(self):
        new = self.admin.dkim_rotate("example.com")[1]["selector"]
        self.admin.domain_delete("example.com", yes=True)
        self.assertFalse(os.path.exists(self.key_file("dkim")))
        self.assertFalse(os.path.exists(self.key_file(new)))
        self.assertEqual(self.admin.db.execute("SELECT count(*) FROM dkim_selectors").fetchone()[0], 0)

    def test_unknown_domain(self):
        self.assertRaises(InvalidInput, self.admin.dkim_rotate, "not a domain")
        self.assertRaises(store.NotFound, self.admin.dkim_status, "nowhere.example")


class CnameZone(Zone):
    """A zone that follows CNAMEs, as the recursive resolver a server is configured with does."""

    def _lookup(self, name, cls, kind, timeout):
        name = (name.decode("ascii") if isinstance(name, bytes) else name).lower()
        [target] = self.records.get((name, dns.CNAME), [None])
        if target is None or kind == dns.CNAME:
            return super()._lookup(name, cls, kind, timeout)
        alias = dns.RRHeader(name, dns.CNAME, dns.IN, 60, target, auth=True)
        d = super()._lookup(target.name.name, cls, kind, timeout)
        return d.addCallback(lambda result: ([alias] + result[0], result[1], result[2]))


class CnameTests(RotationCase):
    """
    C{[dkim] cname_zone}: selectors alternate between C{tm1} and C{tm2},
    CNAMEs the customer publishes once, into the operator's zone.
    """

    extra = "cname_zone = dkim.operator.test\n"
    zone_class = CnameZone

    def setUp(self):
        super().setUp()
        for slot in ("tm1", "tm2"):
            self.zone.records[("%s._domainkey.example.com" % slot, dns.CNAME)] = [
                dns.Record_CNAME("%s.example.com.dkim.operator.test" % slot)]

    def publish(self, selector):
        """The operator publishes; the customer's CNAME leads the lookup there."""
        new = self.selector(selector)
        self.zone.records[("%s.example.com.dkim.operator.test" % selector, dns.TXT)] = [
            txt_record(dkimkeys.txt_value(new.public_key, new.algorithm))]

    def test_full_rotation(self):
        self.assertEqual(self.states(), {"tm1": ACTIVE})
        records = [(n, t, v) for n, t, v in self.admin.domain_dns("example.com") if "_domainkey" in n or "dkim" in n]
        self.assertEqual([(n, t) for n, t, v in records], [
            ("tm1._domainkey.example.com", "CNAME"), ("tm2._domainkey.example.com", "CNAME"),
            ("tm1.example.com.dkim.operator.test", "TXT")])
        self.assertEqual(records[1][2], "tm2.example.com.dkim.operator.test.")
        self.assertEqual(self.admin.dkim_rotate("example.com")[1]["selector"], "tm2")
        self.publish("tm2")
        self.start()
        self.assertEqual(self.states(), {"tm1": RETIRING, "tm2": ACTIVE})
        error = self.assertRaises(InvalidInput, self.admin.dkim_rotate, "example.com")
        self.assertIn("tm1 is still published until", str(error))
        self.clock.advance(7 * DAY)
        self.assertNotIn(("tm1.example.com.dkim.operator.test", "TXT"),
                         [(n, t) for n, t, v in self.admin.domain_dns("example.com")])
        self.assertEqual(self.admin.dkim_rotate("example.com")[-1]["selector"], "tm1", "the slot is free again")
        self.assertEqual([s["state"] for s in self.admin.dkim_status("example.com")],
                         [RETIRED, ACTIVE, PENDING])


class Ed25519Tests(unittest.TestCase):
    """C{[dkim] ed25519 = yes}: rotations make an Ed25519 key too, and mail is signed with both (RFC 8463)."""

    def setUp(self):
        self.config, self.admin, self.clock = support.realm(self, extra="[dkim]\ned25519 = yes\n")
        account = self.admin.account_add("owner@example.net", "starter", verified=True)
        self.admin.domain_add("example.com", account.id)

    def test_dual_signature_verifies_under_dkimpy(self):
        made = [s for s in self.admin.dkim_rotate("example.com") if s["state"] == PENDING]
        self.assertEqual([(s["selector"], s["algorithm"]) for s in made],
                         [("tm20261121", "rsa"), ("tm20261121e", "ed25519")])
        records = {n.split(".")[0]: v for n, t, v in self.admin.domain_dns("example.com") if "_domainkey" in n}
        self.assertTrue(records["tm20261121e"].startswith("v=DKIM1; k=ed25519; p="))
        dkimselectors.step(self.admin.db, self.config.data_dir, "example.com", {"tm20261121", "tm20261121e"},
                           self.clock.seconds(), DAY)
        domain = self.admin.domain_get("example.com")
        self.assertEqual((domain.dkim_selector, domain.dkim_ed25519_selector), ("tm20261121", "tm20261121e"))
        header = signer.Signer(self.config.data_dir, self.clock.seconds).signature(
            MESSAGE, "example.com", domain.dkim_selector, ed25519_selector=domain.dkim_ed25519_selector).header
        signed = header + MESSAGE

        def lookup(name, timeout=5):
            return records[name.decode().split(".")[0]].encode()

        verifier = dkim.DKIM(signed)
        self.assertTrue(verifier.verify(idx=0, dnsfunc=lookup))
        self.assertTrue(verifier.verify(idx=1, dnsfunc=lookup))
        self.assertIn(b"a=ed25519-sha256", signed.split(b"DKIM-Signature", 2)[2])
        self.assertRaises(dkim.ValidationError, dkim.DKIM(signed.replace(b"Body.", b"Forged")).verify,
                          idx=1, dnsfunc=lookup)


class MigrationTests(unittest.TestCase):
    def test_existing_domain_keeps_selector_dkim_active(self):
        db = database.connect(":memory:")
        self.addCleanup(db.close)
        database.upgrade(db, [dataclasses.replace(schema.REALM, migrations=schema.REALM.migrations[:2])])
        db.execute("INSERT INTO accounts (owner_email, registered, plan) VALUES ('o@example.net', '2026-01-01', 'starter')")
        db.execute("INSERT INTO domains (name, account_id, created, dkim_selector, dkim_public_key)"
                   " VALUES ('example.com', 1, 5.0, 'dkim', 'KEY')")
        database.upgrade(db, schema.SCHEMAS)
        domain = store.domain_get(db, "example.com")
        self.assertIsNone(domain.dkim_ed25519_selector)
        [only] = dkimselectors.live(db, domain)
        self.assertEqual((only.selector, only.state, only.public_key, only.activated_at), ("dkim", ACTIVE, "KEY", 5.0))
