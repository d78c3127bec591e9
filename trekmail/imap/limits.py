"""
Connection caps: the per-plan IMAP caps of docs/sending-rules.md, "IMAP connections" (simultaneous
logged-in connections per account from one client address, and per
account in total), a server-wide total, and a cap on connections from one
address that have not logged in yet.

Counting lives in one object per process so that a closed connection
frees its slot at once (the slot is a token the connection hands back in
C{connectionLost}).  With several IMAP processes (C{[imap] processes}) the
first process's object also counts every process's logins, as Dovecot's
anvil does: a login is an I{admission}, a plain integer so that it can
cross to another process, and each remembers which process holds it so
that a process that dies gives its admissions back.
"""

import itertools
import resource
from collections import Counter

MAXIMUM_EXCEEDED = "Maximum connections exceeded"
ALL = ("all",)


def connection_ceiling(configured):
    """
    C{[imap] max_connections}, lowered to leave this process descriptors
    to spare (index files, message files, sockets arriving from another
    IMAP process): a process at its descriptor limit cannot even receive
    a socket handed to it, and the kernel drops it silently.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - min(1024, soft // 8)))


class Slot:
    __slots__ = ("keys",)

    def __init__(self, keys):
        self.keys = keys


class ConnectionLimits:
    def __init__(self, unauthenticated_per_address, total):
        self.unauthenticated_per_address = unauthenticated_per_address
        self.total = total
        self.counts = Counter()
        self.admissions = {}
        self._numbers = itertools.count(1)
        self.changed = lambda: None
        """Called when the number of connections held here changes (another process may want to know)."""

    def _take(self, keys):
        for key in keys:
            self.counts[key] += 1
        if ALL in keys:
            self.changed()
        return Slot(keys)

    def release(self, slot):
        """Gives a slot back; releasing twice is harmless."""
        if slot is None:
            return
        for key in slot.keys:
            self.counts[key] -= 1
            if self.counts[key] <= 0:
                del self.counts[key]
        if ALL in slot.keys:
            self.changed()
        slot.keys = ()

    def connect(self, address):
        """A slot for a new, not yet logged-in connection, or C{None} if the address has too many."""
        if self.counts[("pre", address)] >= self.unauthenticated_per_address:
            return None
        if self.counts[ALL] >= self.total:
            return None
        return self._take((("pre", address), ALL))

    def full(self):
        return self.counts[ALL] >= self.total

    def held(self):
        """Connections held here (one relayed to another process counts twice)."""
        return self.counts[ALL]

    def adopted(self):
        """The slot of a logged-in connection another process accepted and handed over (ask L{full} first)."""
        return self._take((ALL,))

    def spliced(self, slot):
        """A connection now relayed to another process holds a second descriptor here, and counts twice."""
        slot.keys = slot.keys + self._take((ALL,)).keys

    def logged_in(self, slot):
        """The connection has logged in: it no longer counts against its address's unauthenticated cap."""
        pre = [key for key in slot.keys if key[0] == "pre"]
        self.release(Slot(pre))
        slot.keys = tuple(key for key in slot.keys if key[0] != "pre")

    def admit(self, account_id, address, plan, holder=0):
        """
        A login of C{account_id} (an account's mailboxes share the plan's
        caps) from C{address}, held by process C{holder}: its admission
        number, or C{None} past either cap.
        """
        if self.counts[("account", account_id)] >= plan.imap_total:
            return None
        if self.counts[("account-address", account_id, address)] >= plan.imap_per_ip:
            return None
        number = next(self._numbers)
        self.admissions[number] = (self._take((("account", account_id), ("account-address", account_id, address))),
                                   holder)
        return number

    def dismiss(self, number):
        """Ends an admission; ending one twice, or one never given, is harmless."""
        entry = self.admissions.pop(number, None)
        if entry is not None:
            self.release(entry[0])

    def dismiss_holder(self, holder):
        """Ends every admission process C{holder} held (it has died)."""
        for number in [n for n, (_, h) in self.admissions.items() if h == holder]:
            self.dismiss(number)
