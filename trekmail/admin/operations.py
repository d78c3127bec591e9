"""
Every operator verb behind one door, shared by the C{trekmail} CLI and
the admin HTTP API so that both answer the same thing: a verb's result
goes through L{present} on its way out of either.

Realm verbs run whole on the database thread (one call, so their
transactions stay atomic); the verbs that talk to the network
(C{smtp profile test}, C{domain verify}, C{doctor}) read their facts
there, then do their network part on the reactor.
"""

import dataclasses
import datetime
import email.utils
import os

from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger

from trekmail.crypto import SecretKeyring
from trekmail.queue import admin as queue_admin
from trekmail.realm import dkimselectors, profiles, routes, store
from trekmail.realm.admin import Administration, check_domain
from trekmail.realm.errors import InvalidInput, NotFound
from trekmail.realm.settings import RealmSettings
from trekmail.relay import dkimrotation, dnsverify

_log = Logger()
_HIDDEN = ("password_hash", "password", "password_sealed")


def present(value):
    """A verb's result as JSON-ready data; no password or hash ever passes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: present(v) for k, v in value.items() if k not in _HIDDEN}
    if isinstance(value, (list, tuple)):
        return [present(v) for v in value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


REALM_VERBS = {
    "account_add", "account_set", "account_suspend", "account_unsuspend", "account_list", "account_get",
    "domain_add", "domain_get", "domain_list", "mailbox_add", "mailbox_passwd", "mailbox_pause",
    "mailbox_list", "mailbox_delete", "mailbox_rename", "domain_delete", "account_delete",
    "alias_add", "alias_list", "alias_remove", "domain_catchall", "dkim_rotate", "dkim_status",
}
CLOSING_VERBS = {"mailbox_delete", "mailbox_rename", "domain_delete", "account_delete"}
"""The verbs after which some mailbox may be gone, and its IMAP sessions are to be closed."""
PROFILE_VERBS = {
    "profile_add", "profile_get", "profile_list", "profile_delete", "route_set", "route_new",
    "route_show", "key_rotate",
}


@dataclasses.dataclass(frozen=True)
class VerbSettings:
    """What the verbs need besides a database and a clock, built once by the wiring."""

    realm: RealmSettings
    queue_dir: str
    keyring: Optional[SecretKeyring]
    """Seals the SMTP profiles' passwords; C{None} where no profile verb runs (so no key file is made for them)."""


def _domain_dns(db, settings, name):
    records = Administration(db, settings.realm, None).domain_dns(name)
    return [{"name": n, "type": t, "value": v} for n, t, v in records]


QUEUE_VERBS = {
    "domain_dns": _domain_dns,
    "queue_list": lambda db, settings: queue_admin.queue_list(settings.queue_dir),
    "queue_flush": lambda db, settings: queue_admin.queue_flush(settings.queue_dir),
    "queue_delete": lambda db, settings, queue_id: queue_admin.queue_delete(settings.queue_dir, queue_id),
    "suppression_list": lambda db, settings, domain=None: queue_admin.suppression_list(db, domain),
    "suppression_remove":
        lambda db, settings, address, domain=None: queue_admin.suppression_remove(db, address, domain),
}


def run_verb(db, settings, clock, verb, kwargs):
    """Run one synchronous verb on C{db} with L{VerbSettings} C{settings}; the CLI calls this directly."""
    if verb in REALM_VERBS:
        return getattr(Administration(db, settings.realm, clock), verb)(**kwargs)
    if verb in PROFILE_VERBS:
        return getattr(profiles.ProfileAdministration(db, clock, settings.keyring), verb)(**kwargs)
    if verb in QUEUE_VERBS:
        return QUEUE_VERBS[verb](db, settings, **kwargs)
    raise InvalidInput("unknown operation %r" % (verb,))


def _probe(sender, recipient, profile, now):
    return (
        "From: %s\r\nTo: %s\r\nSubject: TrekMail SMTP profile test (%s)\r\nDate: %s\r\n"
        "Message-ID: <profile-test-%d-%s@trekmail>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "This message tests the SMTP profile %r (%s:%d). It can be deleted.\r\n"
        % (sender, recipient, profile.name, email.utils.formatdate(now), profile.id, os.urandom(6).hex(),
           profile.name, profile.host, profile.port)
    ).encode("utf-8")


def _login_and_owner(db, keyring, clock, profile_id):
    login = profiles.ProfileAdministration(db, clock, keyring).profile_login(profile_id)
    return login, store.account_get(db, login.account_id).owner_email


def _verify_facts(db, realm, name):
    published = realm.published
    domain, account = store.domain_context(db, check_domain(name)) or (None, None)
    if domain is None:
        raise NotFound("no domain %s" % (check_domain(name),))
    route = routes.resolve_route(domain, account)
    includes = ()
    if route.kind == routes.PROFILE:
        include = profiles.profile_get(db, route.profile_id).spf_include
        includes = (include,) if include else ()
    return dnsverify.Expectations(
        domain=domain.name,
        spf_include=published.spf_include,
        dkim_name="%s._domainkey.%s" % (domain.dkim_selector, domain.name),
        dkim_public_key=domain.dkim_public_key,
        mx_host=published.hostname,
        dmarc_record=published.dmarc_record,
        provider_includes=includes,
        pending_dkim=dkimselectors.pending(db, domain.name, realm.dkim),
    )


class Operations:
    """
    The verbs, bound to one process's database thread, reactor, DNS
    resolver and smarthost client.

    @param settings: the L{VerbSettings}, with a keyring.
    @param database: a L{ThreadedDatabase}.
    @param smarthost: a L{trekmail.relay.smarthost.Smarthost}.
    @param hashing: the L{trekmail.workerthreads.WorkerThreads} that the
        doctor's password check runs on (the logins' own, in the server).
    @param mailboxes_gone: called once one of L{CLOSING_VERBS} has
        succeeded, for the server to close the sessions of mailboxes that
        no longer exist at once rather than at its next re-check.
    """

    def __init__(self, *, settings, database, reactor, resolver=None, smarthost=None, hashing=None,
                 mailboxes_gone=None):
        self.settings = settings
        self.database = database
        self.reactor = reactor
        self.resolver = resolver
        self.smarthost = smarthost
        self.hashing = hashing
        self.mailboxes_gone = mailboxes_gone

    def call(self, verb, **kwargs):
        """Run a synchronous verb on the database thread; a Deferred of its presented result."""
        if verb in ("profile_test", "domain_verify", "doctor"):
            return getattr(self, verb)(**kwargs)
        d = self.database.run(run_verb, self.settings, self.reactor, verb, kwargs)
        if verb in CLOSING_VERBS and self.mailboxes_gone is not None:
            d.addCallback(self._closing)
        return d.addCallback(present)

    def _closing(self, result):
        """The verb is done whatever happens here: a failure to close sessions is logged, never answered."""
        try:
            self.mailboxes_gone()
        except Exception:
            _log.failure("closing the sessions of deleted or renamed mailboxes failed")
        return result

    @defer.inlineCallbacks
    def profile_test(self, profile_id, to=None, sender=None):
        """docs/sending-rules.md, "Why mail is not sending" check 9: send a probe through the profile and report the provider's reply."""
        login, owner = yield self.database.run(
            _login_and_owner, self.settings.keyring, self.reactor, profile_id)
        sender = sender or owner
        to = to or owner
        result = yield self.smarthost.deliver_via_profile(
            login, sender, [to], _probe(sender, to, login.profile, self.reactor.seconds()))
        return {
            "profile": login.id,
            "ok": result.ok,
            "status": result.status,
            "code": result.code,
            "reply": result.reply,
            "explanation": result.explanation,
            "probe_to": to,
        }

    @defer.inlineCallbacks
    def domain_verify(self, domain):
        expected = yield self.database.run(_verify_facts, self.settings.realm, domain)
        answers = yield dnsverify.lookup_all(self.resolver, expected)
        checks = dnsverify.judge(expected, answers)
        status = "active" if dnsverify.verified(checks) else "pending"
        yield self.database.run(store.domain_update, expected.domain, dns_status=status)
        realm = self.settings.realm
        rotated = yield dkimrotation.advance_domain(
            self.database, self.resolver, realm.data_dir, expected.domain, self.reactor.seconds(), realm.dkim.overlap)
        return {
            "domain": expected.domain,
            "status": status,
            "records": present(checks),
            "dkim_selectors": [dict(selector=s.selector, state=s.state) for s in rotated],
            "note": None if status == "active" else
            "the domain can still send, but receivers may reject or spam-fold its mail until these are fixed",
        }

    def doctor(self, address, recipients=None, password=None):
        from trekmail.admin import doctor

        return doctor.diagnose(self, address, recipients=recipients, password=password)
