"""
The admin HTTP API: every CLI verb as JSON over HTTP on the C{[listen]
admin} endpoint (loopback by default), for a dashboard or scripts.

A request names a verb of L{trekmail.admin.operations} by method and
path; the verb's answer is exactly what C{trekmail --json} prints for the
same operation.  Every request carries C{Authorization: Bearer TOKEN}
(C{[admin] token}, else the C{[admin] token_file}, generated 0600 in the
data directory on first start).  Errors are JSON too: 400 bad input, 401
no or wrong token, 404 not found, 409 duplicate, 413 body too large.
"""

import hmac
import json
import os
import re
import secrets
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from trekmail.admin.operations import present
from trekmail.crypto import SecretKeyError
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound

MAX_BODY = 64 * 1024

_STATUS = ((InvalidInput, 400), (NotFound, 404), (Duplicate, 409), (SecretKeyError, 503))


def load_token(config):
    """The API token: configured, or read from (or generated into) the token file."""
    configured = config.get("admin", "token")
    if configured:
        return configured
    path = config.get("admin", "token_file") or config.data_path("admin.token")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    with open(path) as f:
        return f.read().strip()


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
    ("GET", r"/domains", lambda m, b, q: ("domain_list", dict(account_id=_q(q, "account")))),
    ("POST", r"/domains", lambda m, b, q: ("domain_add", dict(name=b.get("domain"), account_id=b.get("account")))),
    ("GET", r"/domains/([^/]+)", lambda m, b, q: ("domain_get", dict(name=m[1]))),
    ("GET", r"/domains/([^/]+)/dns", lambda m, b, q: ("domain_dns", dict(name=m[1]))),
    ("POST", r"/domains/([^/]+)/verify", lambda m, b, q: ("domain_verify", dict(domain=m[1]))),
    ("GET", r"/domains/([^/]+)/route", lambda m, b, q: ("route_show", dict(domain=m[1]))),
    ("PUT", r"/domains/([^/]+)/route", lambda m, b, q: _route_verb(b, m[1])),
    ("GET", r"/mailboxes", lambda m, b, q: ("mailbox_list", dict(domain=_q(q, "domain")))),
    ("POST", r"/mailboxes", lambda m, b, q: ("mailbox_add", dict(address=b.get("address"), password=b.get("password")))),
    ("POST", r"/mailboxes/([^/]+)/password", lambda m, b, q: ("mailbox_passwd", dict(address=m[1], password=b.get("password")))),
    ("POST", r"/mailboxes/([^/]+)/pause", lambda m, b, q: ("mailbox_pause", dict(address=m[1], paused=True))),
    ("POST", r"/mailboxes/([^/]+)/resume", lambda m, b, q: ("mailbox_pause", dict(address=m[1], paused=False))),
    ("GET", r"/mailboxes/([^/]+)/doctor", lambda m, b, q: ("doctor", dict(
        address=m[1], recipients=int(_q(q, "recipients")) if (_q(q, "recipients") or "").isdigit() else None))),
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

    def _authorised(self, request):
        offered = request.getHeader("authorization") or ""
        scheme, _, token = offered.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("utf-8"), self._token)

    def _body(self, request):
        length = request.getHeader("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return None
        raw = request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return None
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidInput("the request body is not JSON") from None
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
        if not self._authorised(request):
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


def site(operations, token):
    return server.Site(AdminAPI(operations, token))
