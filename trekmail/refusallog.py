"""
The mail log's C{refused} lines of one capped listener, aggregated per
client address: a client hammering a full listener would otherwise write
one line per connection, as fast as it can connect, and bury the rest
of the log.

In each window of L{WINDOW} seconds from an address's first refusal, the
first L{LINES} refusals are logged as they come; the rest are events
without a line (L{maillog.emit_unlogged}: the metrics still count every
one), and when the window ends one C{suppressed} line says how many
there were.  Windows follow the reactor's clock.  At most
L{MAX_ADDRESSES} addresses are followed at once; refusals from the
others share one window, named C{-}, so a flood from many addresses
costs bounded memory too.
"""

from trekmail import maillog

WINDOW = 60
LINES = 5
MAX_ADDRESSES = 10000


class _Window:
    def __init__(self, call):
        self.call = call
        self.logged = 0
        self.suppressed = 0


class RefusalLog:
    """The C{refused} events of one listener on C{log}; C{fields} are the ones every refusal of it shares."""

    def __init__(self, log, clock, **fields):
        self.log = log
        self.clock = clock
        self.fields = fields
        self.windows = {}

    def refused(self, key, client_address):
        """One connection from C{client_address} (counted as C{key}, L{trekmail.connlimit.client_key}) refused."""
        if key not in self.windows and len(self.windows) >= MAX_ADDRESSES:
            key = None
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = _Window(self.clock.callLater(WINDOW, self._close, key))
        if window.logged < LINES:
            window.logged += 1
            maillog.emit(self.log, maillog.REFUSED, client_address=client_address, **self.fields)
        else:
            window.suppressed += 1
            maillog.emit_unlogged(self.log, maillog.REFUSED, client_address=client_address, **self.fields)

    def _close(self, key):
        window = self.windows.pop(key)
        if window.suppressed:
            maillog.emit(self.log, maillog.REFUSALS_SUPPRESSED, client_address=key, suppressed=window.suppressed,
                         window=WINDOW, **self.fields)

    def flush(self):
        """Ends every window now (the listener stops): their summaries are written, no timer is left."""
        for key, window in list(self.windows.items()):
            window.call.cancel()
            self._close(key)
