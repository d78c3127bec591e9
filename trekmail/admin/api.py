"""
The admin HTTP API: every CLI verb as JSON over HTTP on the C{[listen]
admin} endpoint (loopback by default), for a dashboard or scripts.

A request names a verb of L{trekmail.admin.operations} by method and
path; the verb's answer is exactly what C{trekmail --json} prints for the
same operation.  Every request carries C{Authorization: Bearer TOKEN}
(C{[admin] token}, else the C{[admin] token_file}, generated 0600 in the
data directory on first start).  Errors are JSON too: 400 bad input, 401
no or wrong token, 404 not found, 409 duplicate, 413 body too large.
The token and the body's size are checked as soon as the headers are in,
before any of the body is read (L{AdminRequest}).
"""

import hmac
import io
import json
import os
import re
import secrets
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import http, resource, server

from trekmail.admin.operations import present
from trekmail.crypto import SecretKeyError
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound

MAX_BODY = 64 * 1024

MAX_DEPTH = 32
"""Arrays and objects nested deeper than this are refused before C{json.loads},
whose decoder recurses once per level (a few thousand levels exhaust the stack)."""

_STATUS = ((InvalidInput, 400), (NotFound, 404), (Duplicate, 409), (SecretKeyError, 503))


def load_token(configured, path):
    """The API token: C{configured}, or read from (or generated into) the token file at C{path}."""
    if configured:
        return configured
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    with open(path) as f:
        return f.read().strip()


def bearer_matches(values, token):
    """
    Whether the raw C{Authorization} header values carry C{Bearer TOKEN}.
    Compared as bytes: decoding the header first would raise on a
    non-UTF-8 value before any answer could be sent.
    """
    if not values:
        return False
    scheme, _, offered = values[-1].partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(offered.strip(), token)


def too_deep(raw, limit=MAX_DEPTH):
    """
    Whether the JSON text C{raw} nests arrays or objects more than
    C{limit} deep: one pass over the bytes, brackets inside strings skipped.
    """
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


def _flag(value):
    return value in (True, "1", "true", "yes", 1)


def _route_verb(body, name):
    common = dict(domain=name, make_default=_flag(body.get("make_default")),
                  apply_all=_flag(body.get("apply_all")), yes=_flag(body.get("yes")))
    new = body.get("new")
    if isinstance(new, dict):
        return "route_new", dict(common, **_profile_fields(new))
    return "route_set", dict(common, route=body.get("route"))


def _profile_fields(body):
    return {k: body.get(k) for k in ("name", "host", "port", "tls", "username", "password", "spf_include")}


def _q(query, key):
    return query.get(key, [None])[0]


def _asked(body, query, key):
    """A destructive verb's confirmation (C{yes}, C{force}): in the JSON body or the query string."""
    return _flag(body.get(key)) or _flag(_q(query, key))


# (method, path pattern, function(match, body, query) -> (verb, kwargs))
ROUTES = [
    ("GET", r"/accounts", lambda m, b, q: ("account_list", {})),
    ("POST", r"/accounts", lambda m, b, q: ("account_add", dict(
        owner_email=b.get("owner_email"), plan=b.get("plan"), trial=_flag(b.get("trial")),
        registered=b.get("registered"), verified=_flag(b.get("verified"))))),
    ("GET", r"/accounts/(\d+)", lambda m, b, q: ("account_get", dict(account_id=m[1]))),
    ("PATCH", r"/accounts/(\d+)", lambda m, b, q: ("account_set", dict(
        account_id=m[1], plan=b.get("plan"), verified=b.get("verified"), paid=b.get("paid")))),
    ("POST", r"/accounts/(\d+)/suspend", lambda m, b, q: ("account_suspend", dict(account_id=m[1], reason=b.get("reason")))),
    ("POST", r"/accounts/(\d+)/unsuspend", lambda m, b, q: ("account_unsuspend", dict(account_id=m[1]))),
    ("DELETE", r"/accounts/(\d+)", lambda m, b, q: ("account_delete", dict(account_id=m[1], yes=_asked(b, q, "yes")))),
    ("GET", r"/domains", lambda m, b, q: ("domain_list", dict(account_id=_q(q, "account")))),
    ("POST", r"/domains", lambda m, b, q: ("domain_add", dict(name=b.get("domain"), account_id=b.get("account")))),
    ("GET", r"/domains/([^/]+)", lambda m, b, q: ("domain_get", dict(name=m[1]))),
    ("DELETE", r"/domains/([^/]+)", lambda m, b, q: ("domain_delete", dict(
        name=m[1], yes=_asked(b, q, "yes"), force=_asked(b, q, "force")))),
    ("GET", r"/domains/([^/]+)/dns", lambda m, b, q: ("domain_dns", dict(name=m[1]))),
    ("POST", r"/domains/([^/]+)/verify", lambda m, b, q: ("domain_verify", dict(domain=m[1]))),
    ("GET", r"/domains/([^/]+)/dkim", lambda m, b, q: ("dkim_status", dict(domain=m[1]))),
    ("POST", r"/domains/([^/]+)/dkim/rotate", lambda m, b, q: ("dkim_rotate", dict(domain=m[1]))),
    ("GET", r"/domains/([^/]+)/route", lambda m, b, q: ("route_show", dict(domain=m[1]))),
    ("PUT", r"/domains/([^/]+)/route", lambda m, b, q: _route_verb(b, m[1])),
    ("PUT", r"/domains/([^/]+)/catchall", lambda m, b, q: ("domain_catchall", dict(domain=m[1], mailbox=b.get("mailbox")))),
    ("GET", r"/aliases", lambda m, b, q: ("alias_list", dict(domain=_q(q, "domain")))),
    ("POST", r"/aliases", lambda m, b, q: ("alias_add", dict(address=b.get("address"), targets=b.get("targets")))),
    ("DELETE", r"/aliases/([^/]+)", lambda m, b, q: ("alias_remove", dict(address=m[1]))),
    ("GET", r"/mailboxes", lambda m, b, q: ("mailbox_list", dict(domain=_q(q, "domain")))),
    ("POST", r"/mailboxes", lambda m, b, q: ("mailbox_add", dict(address=b.get("address"), password=b.get("password")))),
    ("DELETE", r"/mailboxes/([^/]+)", lambda m, b, q: ("mailbox_delete", dict(address=m[1], yes=_asked(b, q, "yes")))),
    ("POST", r"/mailboxes/([^/]+)/rename", lambda m, b, q: ("mailbox_rename", dict(
        address=m[1], new_address=b.get("address")))),
    ("POST", r"/mailboxes/([^/]+)/password", lambda m, b, q: ("mailbox_passwd", dict(address=m[1], password=b.get("password")))),
    ("POST", r"/mailboxes/([^/]+)/pause", lambda m, b, q: ("mailbox_pause", dict(address=m[1], paused=True))),
    ("POST", r"/mailboxes/([^/]+)/resume", lambda m, b, q: ("mailbox_pause", dict(address=m[1], paused=False))),
    ("GET", r"/mailboxes/([^/]+)/doctor", lambda m, b, q: ("doctor", dict(
        address=m[1], recipients=_q(q, "recipients")))),
    ("POST", r"/mailboxes/([^/]+)/doctor", lambda m, b, q: ("doctor", dict(
        address=m[1], recipients=b.get("recipients"), password=b.get("password")))),
    ("GET", r"/smtp/profiles", lambda m, b, q: ("profile_list", dict(account_id=_q(q, "account")))),
    ("POST", r"/smtp/profiles", lambda m, b, q: ("profile_add", dict(account_id=b.get("account"), **_profile_fields(b)))),
    ("GET", r"/smtp/profiles/(\d+)", lambda m, b, q: ("profile_get", dict(profile_id=m[1]))),
    ("DELETE", r"/smtp/profiles/(\d+)", lambda m, b, q: ("profile_delete", dict(profile_id=m[1]))),
    ("POST", r"/smtp/profiles/(\d+)/test", lambda m, b, q: ("profile_test", dict(
        profile_id=m[1], to=b.get("to"), sender=b.get("from")))),
    ("POST", r"/smtp/rotate-key", lambda m, b, q: ("key_rotate", {})),
    ("GET", r"/queue", lambda m, b, q: ("queue_list", {})),
    ("POST", r"/queue/flush", lambda m, b, q: ("queue_flush", {})),
    ("DELETE", r"/queue/([^/]+)", lambda m, b, q: ("queue_delete", dict(queue_id=m[1]))),
    ("GET", r"/suppressions", lambda m, b, q: ("suppression_list", dict(domain=_q(q, "domain")))),
    ("DELETE", r"/suppressions/([^/]+)", lambda m, b, q: ("suppression_remove", dict(address=m[1], domain=_q(q, "domain")))),
]
_COMPILED = [(method, re.compile("^%s/?$" % (pattern,)), build) for method, pattern, build in ROUTES]


class AdminAPI(resource.Resource):
    """The whole API as one leaf resource: the path table above is the routing."""

    isLeaf = True
    log = Logger()

    def __init__(self, operations, token):
        super().__init__()
        self._operations = operations
        self._token = token.encode("utf-8")

    def render(self, request):
        self._answer(request)
        return server.NOT_DONE_YET

    def authorised(self, request):
        return bearer_matches(request.requestHeaders.getRawHeaders(b"authorization"), self._token)

    def _body(self, request):
        raw = request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return None
        if not raw.strip():
            return {}
        if too_deep(raw):
            raise InvalidInput("the request body nests deeper than %d levels" % (MAX_DEPTH,))
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidInput("the request body is not JSON (or has a number over 4300 digits)") from None
        if not isinstance(body, dict):
            raise InvalidInput("the request body must be a JSON object")
        return body

    def _match(self, request):
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        allowed = False
        for route_method, pattern, build in _COMPILED:
            match = pattern.match(path)
            if match:
                allowed = True
                if route_method == method:
                    return match, build
        raise NotFound("no %s %s in this API" % (method, path) if not allowed else
                       "%s is not allowed on %s" % (method, path))

    @defer.inlineCallbacks
    def _answer(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if not self.authorised(request):
            self._finish(request, 401, {"error": "missing or wrong bearer token"})
            return
        try:
            match, build = self._match(request)
            body = self._body(request)
            if body is None:
                self._finish(request, 413, {"error": "request body larger than %d bytes" % (MAX_BODY,)})
                return
            query = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                     for k, vs in request.args.items()}
            verb, kwargs = build([unquote(g) for g in (match.group(0),) + match.groups()], body, query)
            result = yield self._operations.call(verb, **kwargs)
        except Exception as e:
            status = next((code for kind, code in _STATUS if isinstance(e, kind)), 500)
            if status == 500:
                self.log.failure("admin API {method} {path}", method=request.method, path=request.path)
                self._finish(request, 500, {"error": "internal error (see the server log)"})
            else:
                self._finish(request, status, {"error": str(e)})
            return
        self._finish(request, 200, present(result))

    @staticmethod
    def _finish(request, status, value):
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setResponseCode(status)
        request.write(json.dumps(value, indent=2, sort_keys=True).encode("utf-8") + b"\n")
        request.finish()


class AdminRequest(server.Request):
    """
    A request refused as soon as its headers are in, when the token is
    wrong or the body is too large.

    twisted.web's own Request spools a body with no Content-Length, or
    one of 100,000 bytes or more, to a temporary file, and calls
    C{render} only once all of it has arrived: an anonymous client could
    fill the disk before the token was ever looked at.  The channel calls
    C{gotLength} right after the last header, so the token and the declared
    length are checked there; C{handleContentChunk} counts the bytes of a
    body sent without a length (chunked) as they arrive.  The body is
    kept in memory, at most L{MAX_BODY} bytes.  A refusal is written
    straight to the transport and the connection closed, which also
    stops reading the rest of the body.
    """

    refused = False

    def gotLength(self, length):
        self.content = io.BytesIO()
        self._received = 0
        if not self.channel.site.resource.authorised(self):
            self._refuse(http.UNAUTHORIZED, "missing or wrong bearer token")
        elif length is not None and length > MAX_BODY:
            self._refuse(http.REQUEST_ENTITY_TOO_LARGE, "request body larger than %d bytes" % (MAX_BODY,))

    def handleContentChunk(self, data):
        if self.refused:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            self._refuse(http.REQUEST_ENTITY_TOO_LARGE, "request body larger than %d bytes" % (MAX_BODY,))
            return
        self.content.write(data)

    def process(self):
        if not self.refused:
            super().process()

    def _refuse(self, status, message):
        self.refused = True
        self.content = io.BytesIO()
        # No "100 Continue" after the answer: the client must not send the body.
        self.requestHeaders.removeHeader(b"expect")
        body = json.dumps({"error": message}).encode("utf-8") + b"\n"
        self.channel.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, http.RESPONSES[status], len(body), body))
        self.channel.loseConnection()


def site(operations, token):
    return server.Site(AdminAPI(operations, token), requestFactory=AdminRequest)
