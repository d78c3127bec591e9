"""
Connection caps: the per-plan IMAP caps of seed 003 (simultaneous
logged-in connections per account from one client address, and per
account in total), a server-wide total, and a cap on connections from one
address that have not logged in yet.

Counting lives in one object per listener group so that a closed
connection frees its slot at once (the slot is a token the connection
hands back in C{connectionLost}).
"""

from collections import Counter

MAXIMUM_EXCEEDED = "Maximum connections exceeded"


class Slot:
    __slots__ = ("keys",)

    def __init__(self, keys):
        self.keys = keys


class ConnectionLimits:
    def __init__(self, unauthenticated_per_address, total):
        self.unauthenticated_per_address = unauthenticated_per_address
        self.total = total
        self.counts = Counter()

    def _take(self, keys):
        for key in keys:
            self.counts[key] += 1
        return Slot(keys)

    def release(self, slot):
        """Gives a slot back; releasing twice is harmless."""
        if slot is None:
            return
        for key in slot.keys:
            self.counts[key] -= 1
            if self.counts[key] <= 0:
                del self.counts[key]
        slot.keys = ()

    def connect(self, address):
        """A slot for a new, not yet logged-in connection, or C{None} if the address has too many."""
        if self.counts[("pre", address)] >= self.unauthenticated_per_address:
            return None
        if self.counts[("all",)] >= self.total:
            return None
        return self._take((("pre", address), ("all",)))

    def login(self, slot, account_id, address, plan):
        """
        Turns a connection's slot into a logged-in one of C{account_id}
        (an account's mailboxes share the plan's caps); returns C{False},
        leaving the slot as it was, past either cap.
        """
        if self.counts[("account", account_id)] >= plan.imap_total:
            return False
        if self.counts[("account-address", account_id, address)] >= plan.imap_per_ip:
            return False
        pre = [key for key in slot.keys if key[0] == "pre"]
        self.release(Slot(pre))
        rest = tuple(key for key in slot.keys if key not in pre)
        slot.keys = rest + self._take((("account", account_id), ("account-address", account_id, address))).keys
        return True
