"""
Figures read from the running server when Prometheus scrapes, rather
than counted as they change: the queue held in memory (the scheduler's
own entries, so a scrape walks no spool directory), the connections each
capped listener holds (L{trekmail.connlimit}), each IMAP process's
connections (the first process's own count, and what the others last
reported to it over their link, L{trekmail.imap.cluster}), and the DAV
site's requests.
"""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

QUEUE_STATES = ("new", "deferred", "active")
AGE_BUCKETS = ((300, "5m"), (3600, "1h"), (6 * 3600, "6h"), (86400, "1d"), (5 * 86400, "5d"))
"""Upper bounds of the queue's age buckets, and their label; an older message counts as C{older}."""


def age_bucket(age):
    for bound, name in AGE_BUCKETS:
        if age < bound:
            return name
    return "older"


class ServerCollector:
    """
    A Prometheus collector over the parts of one server; any of them may
    be C{None} (not configured).

    @param queue: has C{census()}: C{(state, received_at)} per message.
    @param listeners: C{{name: factory}} of capped listeners, each with C{open}.
    @param imap: the IMAP cluster role: C{limits.held()}, and C{loads} (other processes) on the coordinator.
    @param dav: the DAV site, with C{requests} (a Counter by method).
    @param clock: C{seconds()}.
    """

    def __init__(self, clock, *, queue=None, listeners=None, imap=None, dav=None):
        self.clock = clock
        self.queue = queue
        self.listeners = {} if listeners is None else listeners
        self.imap = imap
        self.dav = dav

    def collect(self):
        yield from self._queue()
        connections = GaugeMetricFamily("trekmail_connections_open", "Connections open, by listener",
                                        labels=["listener"])
        for name, factory in sorted(self.listeners.items()):
            connections.add_metric([name], factory.open)
        yield connections
        if self.imap is not None:
            sessions = GaugeMetricFamily("trekmail_imap_connections", "IMAP connections served, by process",
                                         labels=["process"])
            sessions.add_metric([str(self.imap.index)], self.imap.limits.held())
            for index, load in sorted(getattr(self.imap, "loads", {}).items()):
                sessions.add_metric([str(index)], load)
            yield sessions
        if self.dav is not None:
            requests = CounterMetricFamily("trekmail_dav_requests", "CalDAV/CardDAV requests, by method",
                                           labels=["method"])
            for method, count in sorted(self.dav.requests.items()):
                requests.add_metric([method], count)
            yield requests

    def _queue(self):
        if self.queue is None:
            return
        now = self.clock.seconds()
        states = dict.fromkeys(QUEUE_STATES, 0)
        ages = dict.fromkeys([name for _, name in AGE_BUCKETS] + ["older"], 0)
        oldest = 0.0
        for state, received_at in self.queue.census():
            states[state] += 1
            age = max(0.0, now - received_at) if received_at else 0.0
            ages[age_bucket(age)] += 1
            oldest = max(oldest, age)
        by_state = GaugeMetricFamily("trekmail_queue_messages", "Messages in the queue, by state", labels=["state"])
        for state, count in states.items():
            by_state.add_metric([state], count)
        by_age = GaugeMetricFamily("trekmail_queue_messages_by_age",
                                   "Messages in the queue, by age (younger than the label; older: past 5 days)",
                                   labels=["age"])
        for name, count in ages.items():
            by_age.add_metric([name], count)
        yield by_state
        yield by_age
        yield GaugeMetricFamily("trekmail_queue_oldest_seconds", "Age of the oldest message in the queue",
                                value=oldest)
