"""
Counters and histograms fed by the mail log (L{trekmail.maillog}): a
twisted.logger observer reads each event's C{log_trekmail} kind and plain
fields, so a figure is counted where its log line is written and the two
cannot disagree.  The other IMAP processes' events reach the first
process's log publisher (L{trekmail.imapprocesses}), so their logins are
counted here too.

Label values come from our own code (listener and route names, outcome
words, reply codes of our tables); anything else is folded into
C{other}, so a client cannot grow the number of series.
"""

from prometheus_client import Counter, Histogram

from trekmail import maillog

DELAY_BUCKETS = (1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400)
"""Seconds from arrival: a local delivery takes about one, a retry schedule hours, expiry five days."""

MAX_LABEL = 40


def _label(value):
    """A label value that is one of our own words, or C{other}."""
    text = "" if value is None else str(value)
    if not text:
        return "none"
    if len(text) > MAX_LABEL or not all(c.isalnum() or c in "-_. " for c in text):
        return "other"
    return text


class MailLogMetrics:
    """The event-fed metrics on C{registry}; call it with each log event (an observer)."""

    def __init__(self, registry):
        self.accepted = Counter("trekmail_messages_accepted", "Messages accepted (250 to DATA or the send API)",
                                ["listener"], registry=registry)
        self.deliveries = Counter("trekmail_deliveries", "Delivery attempts of one recipient, by outcome and route",
                                  ["outcome", "route"], registry=registry)
        self.delay = Histogram("trekmail_delivery_delay_seconds",
                               "Seconds from a message's arrival to a delivery attempt's end, by outcome",
                               ["outcome"], buckets=DELAY_BUCKETS, registry=registry)
        self.stored = Counter("trekmail_local_deliveries", "Messages stored in a hosted mailbox",
                              registry=registry)
        self.reports = Counter("trekmail_reports", "Delivery reports sent, by kind", ["kind"], registry=registry)
        self.logins = Counter("trekmail_logins", "Logins, by protocol and outcome (ok, failed, throttled, ...)",
                              ["protocol", "outcome"], registry=registry)
        self.refusals = Counter("trekmail_refusals", "Connections and commands refused, by reason and reply",
                                ["protocol", "listener", "reason", "code"], registry=registry)
        self._counting = {maillog.ACCEPTED: self._accepted, maillog.DELIVERY: self._delivery,
                          maillog.LOCAL_DELIVERY: self._stored, maillog.REPORT: self._report,
                          maillog.LOGIN: self._login, maillog.REFUSED: self._refused}

    def __call__(self, event):
        counting = self._counting.get(event.get("log_trekmail"))
        if counting is not None:
            counting(event)

    def _accepted(self, event):
        self.accepted.labels(_label(event.get("listener"))).inc()

    def _delivery(self, event):
        outcome = _label(event.get("outcome"))
        self.deliveries.labels(outcome, _label(event.get("route"))).inc()
        delay = event.get("delay")
        if isinstance(delay, (int, float)) and delay >= 0:
            self.delay.labels(outcome).observe(delay)

    def _stored(self, event):
        self.stored.inc()

    def _report(self, event):
        self.reports.labels(_label(event.get("kind"))).inc()

    def _login(self, event):
        self.logins.labels(_label(event.get("protocol")), _label(event.get("outcome"))).inc()

    def _refused(self, event):
        self.refusals.labels(_label(event.get("protocol")), _label(event.get("listener")),
                             _label(event.get("reason")), _label(event.get("code"))).inc()
