"""The cluster roles are complete when constructed: what sessions join is built with them, not set after."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from trekmail.imap.cluster import Coordinator, Member, Solo
from trekmail.imap.clusterlogins import AskingCoordinator
from trekmail.imap.limits import ConnectionLimits


class BuiltTests(unittest.TestCase):
    def build(self, make):
        seen = []

        def serving(cluster):
            seen.append((cluster, cluster.guard, cluster.index))
            return "factory", {"imap": "door"}

        cluster = make(ConnectionLimits(10, 100), serving)
        self.assertEqual((cluster.factory, cluster.doors), ("factory", {"imap": "door"}))
        self.assertEqual(seen, [(cluster, cluster.guard, cluster.index)], "built once, by a cluster already whole")
        return cluster

    def test_solo(self):
        self.build(lambda limits, serving: Solo(limits, reactor=Clock(), serving=serving))

    def test_coordinator(self):
        self.build(lambda limits, serving: Coordinator(limits, reactor=Clock(), size=2, serving=serving))

    def test_member_serves_with_the_guard_that_asks_the_coordinator(self):
        member = self.build(lambda limits, serving: Member(limits, reactor=Clock(), index=1, serving=serving))
        self.assertIsInstance(member.guard, AskingCoordinator)
        self.assertEqual(member.index, 1)
