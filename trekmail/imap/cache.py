"""
The raw messages an IMAP process keeps in memory.  Each trip to a file
thread costs the reactor more than most commands' own work (py-spy under
imaptest; C{bench/handoff.py}), so recently used messages stay in a
bounded L{MessageCache}.
"""

from collections import OrderedDict

from trekmail.imap import message


class MessageCache:
    """
    Raw messages recently read or appended, least recently used dropped
    first, at most C{limit} bytes.  A Maildir file never changes once
    written and its name is unique, so an entry never goes stale; FETCH
    and SEARCH of a message in here need no trip to a file thread.
    Entries are L{message.Kept}: each may also hold one header answer,
    at most its own size again.
    """

    def __init__(self, limit):
        self.limit = limit
        self.size = 0
        self.entries = OrderedDict()

    def get(self, key):
        data = self.entries.get(key)
        if data is not None:
            self.entries.move_to_end(key)
        return data

    def put(self, key, data):
        if data is None or len(data) > self.limit // 16 or key in self.entries:
            return
        self.entries[key] = message.Kept(data)
        self.size += len(data)
        while self.size > self.limit:
            self.size -= len(self.entries.popitem(last=False)[1])

    def drop(self, keys):
        for key in keys:
            data = self.entries.pop(key, None)
            if data is not None:
                self.size -= len(data)

