"""
The C{[listen] metrics} listener's site and the service that feeds it.

The exposition is built on the reactor thread: every figure is already
in memory (L{trekmail.metrics.gauges} reads counts, never the disk), so a
scrape is short and needs none of prometheus_client's WSGI threads.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.application import service
from twisted.logger import globalLogPublisher
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Site

from trekmail.metrics.events import MailLogMetrics
from trekmail.metrics.gauges import ServerCollector

PATH = b"metrics"


class Exposition(Resource):
    """C{GET /metrics}: the text exposition format of C{registry}."""

    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class Root(Resource):
    def __init__(self, registry):
        super().__init__()
        self.putChild(PATH, Exposition(registry))

    def getChild(self, path, request):
        return NoResource("the metrics are at /metrics")


class QuietSite(Site):
    """No access-log line per request: Prometheus scrapes every few seconds, and the log is for mail."""

    def log(self, request):
        pass


class MetricsService(service.Service):
    """
    Holds the registry, and watches the log while the server runs: the
    observer joins the global publisher at start and leaves it at stop.
    """

    def __init__(self, clock, publisher=globalLogPublisher, **parts):
        self.registry = CollectorRegistry()
        self.events = MailLogMetrics(self.registry)
        self.collector = ServerCollector(clock, **parts)
        self.registry.register(self.collector)
        self.publisher = publisher

    def site(self):
        return QuietSite(Root(self.registry))

    def startService(self):
        super().startService()
        self.publisher.addObserver(self.events)

    def stopService(self):
        super().stopService()
        self.publisher.removeObserver(self.events)
