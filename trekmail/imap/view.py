"""
One session's view of a selected folder (RFC 3501 5.2, 7.4.1): its own
sequence numbers, plus the expunges, new mail and flag changes it has not
been told about yet.  Twisted's C{IMailbox} shares one numbering among
all sessions and has no way to tell a session about another's EXPUNGE;
here the folder (L{trekmail.imap.folder.Folder}) holds the shared state
once per process and each selected session has a L{View} of it.
"""

import bisect

from trekmail.imap import fetch

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


NOTHING = frozenset()
RECENT = frozenset({"\\Recent"})


class View:
    """
    One session's numbering of a selected folder and what it has yet to
    hear.  An idle session costs little: C{uids} is the folder's own list
    (never changed in place, by anyone) until this session's numbering
    differs from it, and the sets of what it has yet to hear are the
    shared empty L{NOTHING} until there is something in them.
    """

    __slots__ = ("folder", "listener", "readonly", "uids", "last_uid", "expunged", "changed", "recent",
                 "condstore", "keywords")

    def __init__(self, folder, listener, readonly):
        self.folder = folder
        self.listener = listener
        self.readonly = readonly
        self.uids = folder.uids
        self.last_uid = self.uids[-1] if self.uids else 0
        self.expunged = NOTHING
        self.changed = NOTHING
        self.recent = NOTHING
        self.condstore = False
        self.keywords = len(folder.keywords)

    def forget(self, uids):
        """Drops messages from this numbering (an EXPUNGE it is about to send): C{* n EXPUNGE} lines."""
        out = []
        gone = set()
        for uid in sorted(uids, reverse=True):
            seq = self.seq_of(uid)
            if seq is not None:
                gone.add(uid)
                out.append(b"* %d EXPUNGE\r\n" % seq)
        if gone:
            self.uids = [u for u in self.uids if u not in gone]
        if self.recent:
            self.recent = self.recent - set(uids)
        return out


    def seq_of(self, uid):
        position = bisect.bisect_left(self.uids, uid)
        if position < len(self.uids) and self.uids[position] == uid:
            return position + 1
        return None

    def rejoin(self):
        """Shares the folder's list again once this numbering is the folder's (after an EXPUNGE, or new mail)."""
        folder = self.folder
        if self.uids is not folder.uids and len(self.uids) == len(folder.uids) and self.uids == folder.uids:
            self.uids = folder.uids

    def flags_of(self, uid):
        msg = self.folder.get(uid)
        flags = msg.flags if msg is not None else frozenset()
        if uid in self.recent:
            return flags | RECENT
        return flags

    def numbered(self, uids):
        """
        C{(seq, uid, msg, flags)} of each of C{uids} that this view numbers
        and the folder still has: L{seq_of} and L{flags_of} for a whole
        FETCH in one call, as they were a tenth of its cost.
        """
        get, recent, own = self.folder.get, self.recent, self.uids
        count = len(own)
        if uids:
            # 1:* and other runs of this view's own numbering (the usual
            # FETCH of a mail client's resync) need no search per message.
            first = bisect.bisect_left(own, uids[0])
            if own[first:first + len(uids)] == uids:
                for seq, uid in enumerate(uids, first + 1):
                    msg = get(uid)
                    if msg is not None:
                        yield seq, uid, msg, (msg.flags | RECENT) if uid in recent else msg.flags
                return
        for uid in uids:
            msg = get(uid)
            position = bisect.bisect_left(own, uid)
            if msg is None or position == count or own[position] != uid:
                continue
            yield position + 1, uid, msg, (msg.flags | RECENT) if uid in recent else msg.flags

    def updates(self, allow_expunge=True):
        """Untagged responses that bring the session up to date (RFC 3501 7.4.1, RFC 7162 3.2)."""
        out = []
        if self.keywords != len(self.folder.keywords):
            out.append(self.flags_lines())
        if allow_expunge and self.expunged:
            out.extend(self.forget(self.expunged))
            self.folder.release_ghosts(self, self.expunged)
            self.expunged = NOTHING
        folder = self.folder
        if folder.uidnext - 1 > self.last_uid:
            position = bisect.bisect_right(folder.uids, self.last_uid)
            fresh = folder.uids[position:]
            if fresh:
                self.uids = self.uids + fresh
                self.last_uid = fresh[-1]
                if self.recent:
                    self.recent = {u for u in self.recent if self.seq_of(u) is not None}
                out.append(b"* %d EXISTS\r\n* %d RECENT\r\n" % (len(self.uids), len(self.recent)))
            else:
                self.last_uid = folder.uidnext - 1
        self.rejoin()
        if self.changed:
            for uid in sorted(self.changed):
                seq = self.seq_of(uid)
                if seq is not None and uid not in self.expunged:
                    out.append(self.flag_line(seq, uid))
            self.changed = NOTHING
        return out

    def flags_lines(self):
        """C{* FLAGS} and C{PERMANENTFLAGS}, sent again whenever a keyword is new (RFC 3501 7.2.6)."""
        self.keywords = len(self.folder.keywords)
        flags = " ".join(list(SYSTEM_FLAGS) + sorted(self.folder.keywords)).encode()
        # A read-only selection may change no flag (RFC 3501 7.1, PERMANENTFLAGS).
        permanent = b"" if self.readonly else flags + b" \\*"
        return b"* FLAGS (%s)\r\n* OK [PERMANENTFLAGS (%s)] Flags permitted\r\n" % (flags, permanent)

    def flag_line(self, seq, uid, with_uid=True):
        items = b"FLAGS " + fetch.flag_list(self.flags_of(uid))
        if with_uid:
            items = b"UID %d " % uid + items
        if self.condstore:
            msg = self.folder.get(uid)
            items += b" MODSEQ (%d)" % (msg.modseq if msg else self.folder.highestmodseq)
        return b"* %d FETCH (%s)\r\n" % (seq, items)

    def close(self):
        self.folder.close_view(self)
