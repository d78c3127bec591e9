"""
Who may use the calendars and address books: the mailbox realm, through
the same cred checker as IMAP and SMTP (full address and mailbox
password; a bare local part fails), under the server's one
failed-login guard (shared with SMTP AUTH and IMAP), and a directory
outage answered as an outage (503), never as a wrong password.

Radicale cannot answer 503 or 429 from an auth plugin (it turns every
exception into a 500), so the check runs in L{Door}, a WSGI layer in
front of it, and the plugin, L{Auth}, hands Radicale the address the door
verified.  The door removes the Authorization header before Radicale sees
the request, so Radicale can never take credentials the door did not
check; without them it asks for some with its own 401.
"""

import base64
import binascii
import hmac
import secrets

from radicale import auth as radicale_auth
from twisted.cred.credentials import UsernamePassword
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger

from trekmail import maillog
from trekmail.policy.logins import Busy, Failed, Throttled
from trekmail.realm.errors import DirectoryUnavailable

VERIFIED = "trekmail.dav.address"
"""The WSGI environ key holding the address L{Door} verified."""

_VOUCHER = secrets.token_hex(16)
"""What L{Auth} hands Radicale as the password of a verified login, so that its C{_login} accepts only those."""

REALM = b'Basic realm="TrekMail", charset="UTF-8"'

log = Logger()


class LoginRefused(Exception):
    """Wrong address or password (or a bare local part)."""


class LoginThrottled(Exception):
    """Too many failures from this client address lately."""


class LoginBusy(Exception):
    """Too many logins from this client address are being checked at once."""


class Logins:
    """
    Checks Basic credentials on the reactor thread, under the server's
    L{trekmail.policy.logins.LoginGuard}; a failure is held for the
    throttle's delay, as SMTP AUTH holds its 535.
    """

    def __init__(self, checker, guard):
        self._checker = checker
        self._guard = guard

    def login(self, username, password, client):
        """Deferred firing with the mailbox address, or failing with L{LoginRefused}, L{LoginThrottled}, L{LoginBusy} or L{DirectoryUnavailable}."""
        credentials = UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))
        d = maillog.watch_login(log, "dav", client, username, self._guard.login(
            client, lambda: self._checker.requestAvatarId(credentials)), lambda address: address)

        def refused(failure):
            failure.trap(Throttled, Busy, Failed)
            if failure.check(Throttled):
                raise LoginThrottled()
            if failure.check(Busy):
                raise LoginBusy()
            verdict = failure.value.verdict

            def answer():
                raise LoginThrottled() if verdict.disconnect else LoginRefused()
            if verdict.delay <= 0:
                answer()
            return deferLater(self._guard.clock, verdict.delay, answer)

        d.addErrback(refused)
        d.addCallback(lambda address: address.decode("utf-8") if isinstance(address, bytes) else address)
        return d


class Door:
    """
    The WSGI application clients reach: checks Basic credentials with
    L{Logins} (waiting on the reactor from this worker thread), then passes
    the request to Radicale with the verified address, or answers 401, 429
    or 503 itself.  A request without credentials goes on anonymous, and
    Radicale asks for them with its own 401.
    """

    def __init__(self, application, logins, reactor):
        self._application = application
        self._logins = logins
        self._reactor = reactor

    def __call__(self, environ, start_response):
        environ.pop(VERIFIED, None)
        authorization = environ.pop("HTTP_AUTHORIZATION", "")
        if authorization[:5].lower() == "basic":
            try:
                username, colon, password = base64.b64decode(
                    authorization[5:].strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return _answer(start_response, "400 Bad Request", b"Malformed Basic credentials\n")
            if not colon:
                return _answer(start_response, "400 Bad Request", b"Malformed Basic credentials\n")
            try:
                environ[VERIFIED] = blockingCallFromThread(
                    self._reactor, self._logins.login, username, password, environ.get("REMOTE_ADDR", ""))
            except LoginRefused:
                return _answer(start_response, "401 Unauthorized", b"Authentication failed\n",
                               [("WWW-Authenticate", REALM.decode("ascii"))])
            except LoginThrottled:
                return _answer(start_response, "429 Too Many Requests", b"Too many failed logins; try later\n",
                               [("Retry-After", "900")])
            except LoginBusy:
                return _answer(start_response, "429 Too Many Requests", b"Too many logins at once; try again\n",
                               [("Retry-After", "1")])
            except DirectoryUnavailable:
                return _answer(start_response, "503 Service Unavailable", b"Directory temporarily unavailable\n",
                               [("Retry-After", "60")])
        return self._application(environ, start_response)


def _answer(start_response, status, body, headers=()):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))] + list(headers))
    return [body]


class Auth(radicale_auth.BaseAuth):
    """
    The Radicale auth plugin (C{[auth] type = trekmail.dav.auth}): the
    login is the address L{Door} verified, or anonymous.
    """

    def get_external_login(self, environ):
        address = environ.get(VERIFIED)
        return (address, _VOUCHER) if address else ()

    def _login(self, login, password):
        return login if hmac.compare_digest(password, _VOUCHER) else ""
