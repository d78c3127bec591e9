"""
CalDAV and CardDAV at C{/dav/}: Radicale (the maintained Python DAV
server, a WSGI application) mounted in the twistd service through
twisted.web's C{WSGIResource}, on a bounded thread pool so that its file
work never runs on the reactor thread.

A mailbox's calendars and address books live under
C{<data_dir>/dav/collections}, and Radicale's C{owner_only} rights give
each mailbox its own principal (C{/dav/<address>/}) and nothing else.
C{/.well-known/caldav} and C{/.well-known/carddav} answer 301 to C{/dav/}
for clients that discover the service (RFC 6764); a 301 keeps a PROPFIND
a PROPFIND, where many HTTP clients turn a 302 into a GET.

The site is only ever served behind TLS: C{[listen] https} is an
implicit-TLS listener and nothing serves it in the clear.  A request body
longer than C{[dav] max_body} is refused with 413 as soon as its length
is known (L{BoundedRequest}): twisted.web would otherwise keep any upload,
on disk past 100 KB, before Radicale could look at it.
"""

import io
import logging
import os
from collections import Counter

import radicale
import radicale.config
from twisted.logger import Logger, LogLevel
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.wsgi import WSGIResource

from trekmail.dav.auth import Door, Logins

MOUNT = b"dav"


class TwistedLogHandler(logging.Handler):
    """
    Radicale's log records (stdlib logging) as twisted.logger events, so
    its warnings reach the server's log with everything else instead of
    raw stderr.  Radicale never sees a password: the door removes them.
    """

    _LEVELS = ((logging.ERROR, LogLevel.error), (logging.WARNING, LogLevel.warn), (logging.INFO, LogLevel.info))

    def __init__(self, log):
        super().__init__()
        self._log = log

    def emit(self, record):
        level = next((level for floor, level in self._LEVELS if record.levelno >= floor), LogLevel.debug)
        self._log.emit(level, "{text}", text=record.getMessage())


def route_radicale_log():
    """Send the C{radicale} logger's warnings and errors to twisted.logger (once per process)."""
    radicale_log = logging.getLogger("radicale")
    if not any(isinstance(handler, TwistedLogHandler) for handler in radicale_log.handlers):
        radicale_log.addHandler(TwistedLogHandler(Logger(namespace="radicale")))
        radicale_log.propagate = False
        radicale_log.setLevel(logging.WARNING)


def radicale_application(collections):
    """Radicale's WSGI application, configured for TrekMail: our auth plugin, owner-only rights."""
    route_radicale_log()
    configuration = radicale.config.load()
    configuration.update({
        "auth": {"type": "trekmail.dav.auth", "delay": "0"},
        "rights": {"type": "owner_only"},
        "storage": {"filesystem_folder": collections},
        "web": {"type": "none"},
        "logging": {"mask_passwords": "True"},
    }, "trekmail")
    return radicale.Application(configuration)


class MovedTo(Resource):
    """A 301 to C{location} for every method (PROPFIND included)."""

    isLeaf = True

    def __init__(self, location):
        super().__init__()
        self._location = location

    def render(self, request):
        request.setResponseCode(301)
        request.setHeader(b"location", self._location)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Moved to " + self._location + b"\n"


class BoundedRequest(Request):
    """A request whose body may hold at most C{limit} bytes; a longer one gets 413 and the connection closes."""

    limit = 26214400
    _refused = False
    _stored = 0

    def gotLength(self, length):
        if length is not None and length > self.limit:
            self._refuse()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._stored += len(data)
        if self._stored > self.limit:
            self._refuse()
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self._refused:
            super().requestReceived(command, path, version)

    def _refuse(self):
        self._refused = True
        self.content = io.BytesIO()
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        transport.loseConnection()


METHODS = frozenset((b"GET", b"HEAD", b"PUT", b"POST", b"DELETE", b"OPTIONS", b"PROPFIND", b"PROPPATCH", b"MKCOL",
                     b"MKCALENDAR", b"COPY", b"MOVE", b"REPORT", b"LOCK", b"UNLOCK"))


class CountingSite(Site):
    """
    Counts its requests by method (C{requests}), read by the metrics at
    scrape time; a method DAV does not know counts as C{other}, so a
    client cannot add names.
    """

    def __init__(self, resource, **kwargs):
        super().__init__(resource, **kwargs)
        self.requests = Counter()

    def getResourceFor(self, request):
        method = request.method if request.method in METHODS else b"OTHER"
        self.requests[method.decode("ascii")] += 1
        return super().getResourceFor(request)


def mount(root, path, resource):
    """Put C{resource} at C{path} (a tuple of segments) under C{root}, sharing the folders already there."""
    folder = root
    for segment in path[:-1]:
        if segment not in folder.children:
            folder.putChild(segment, Resource())
        folder = folder.children[segment]
    folder.putChild(path[-1], resource)


def site(application, pool, reactor, max_body=BoundedRequest.limit, mounts=()):
    """
    The twisted.web site: Radicale at /dav/, the two well-known redirects,
    the C{(path, resource)} C{mounts} (autoconfiguration...), 404 elsewhere.
    """
    root = Resource()
    root.putChild(MOUNT, WSGIResource(reactor, pool, application))
    for name in (b"caldav", b"carddav"):
        mount(root, (b".well-known", name), MovedTo(b"/" + MOUNT + b"/"))
    for path, resource in mounts:
        mount(root, path, resource)
    return CountingSite(root, requestFactory=type("DavRequest", (BoundedRequest,), {"limit": max_body}))


def dav_site(*, collections, threads, max_body, checker, reactor, logins, mounts=()):
    """
    C{(site, pool)}: the HTTPS site for C{[listen] https}, keeping
    Radicale's collections under C{collections}, and the pool of
    C{threads} it needs started; C{mounts} as L{site} takes them.
    """
    # Radicale warns at every first start when its root is missing; it is ours to make.
    os.makedirs(os.path.join(collections, "collection-root"), mode=0o700, exist_ok=True)
    pool = ThreadPool(minthreads=1, maxthreads=threads, name="trekmail-dav")
    door = Door(radicale_application(collections), Logins(checker, logins), reactor)
    return site(door, pool, reactor, max_body, mounts), pool
