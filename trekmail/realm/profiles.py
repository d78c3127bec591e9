"""
Bring-your-own SMTP profiles and per-domain routes (docs/sending-rules.md, "SMTP profiles", "Routes"):
the operator's verbs, shared by the CLI and the admin HTTP API.

Passwords are sealed with L{trekmail.crypto.SecretKeyring} (the key lives
in a file outside the database) and bound to their row; nothing here
returns one except L{ProfileAdministration.profile_login}, which the
relay uses and no listing or API answer calls.  Every rule that touches
several rows (deleting a profile, applying a route to all domains,
rotating the key) runs as one transaction, so no domain ever names a
missing profile, not even between two statements.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

from trekmail.plans import plan_named
from trekmail.realm import routes, store
from trekmail.realm.admin import check_domain, check_id
from trekmail.realm.database import from_row, transaction
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound

TLS_MODES = ("implicit", "starttls", "none")

_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")

KNOWN_SPF_INCLUDES = (
    (".amazonaws.com", "amazonses.com"),
    ("smtp.sendgrid.net", "sendgrid.net"),
    (".mailgun.org", "mailgun.org"),
    (".postmarkapp.com", "spf.mtasv.net"),
)
"""docs/sending-rules.md, "SMTP profiles": the providers: the SPF include each one asks customers to publish."""


@dataclass(frozen=True)
class SmtpProfile:
    """A saved provider, as any listing shows it: never with its password."""

    id: int
    account_id: int
    name: str
    host: str
    port: int
    tls: str
    username: str
    spf_include: Optional[str]
    created: float

    @property
    def route(self):
        return "%s:%d" % (routes.PROFILE, self.id)


@dataclass(frozen=True)
class ProfileLogin:
    """A profile with its password in the clear, for the relay client only."""

    profile: SmtpProfile
    password: str = field(repr=False)

    def __getattr__(self, name):
        return getattr(self.profile, name)


def _context(profile_id):
    """What a sealed password is bound to: moving it to another row breaks it."""
    return b"smtp-profile:%d" % (profile_id,)


def guess_spf_include(host):
    host = host.lower()
    for suffix, include in KNOWN_SPF_INCLUDES:
        if host == suffix.lstrip(".") or host.endswith(suffix):
            return include
    return None


def profile_get(db, profile_id):
    row = db.execute("SELECT * FROM smtp_profiles WHERE id = ?", (profile_id,)).fetchone()
    if row is None:
        raise NotFound("no SMTP profile with id %s" % (profile_id,))
    return from_row(SmtpProfile, row)


def profiles_of(db, account_id):
    rows = db.execute("SELECT * FROM smtp_profiles WHERE account_id = ? ORDER BY id", (account_id,))
    return [from_row(SmtpProfile, r) for r in rows]


def _check_host(host):
    host = (host or "").strip().lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise InvalidInput("%r is not a host name (expected something like smtp.sendgrid.net)" % (host,))
    return host


def _check_port(port):
    try:
        value = int(port)
    except (TypeError, ValueError):
        raise InvalidInput("%r is not a port number" % (port,)) from None
    if not 0 < value < 65536:
        raise InvalidInput("%r is not a port number (1-65535)" % (port,))
    return value


def _check_text(what, value, longest):
    value = (value or "").strip()
    if not value:
        raise InvalidInput("the %s is empty" % (what,))
    if len(value) > longest or any(c in value for c in "\r\n\0"):
        raise InvalidInput("the %s is longer than %d characters or holds a line break" % (what, longest))
    return value


def _check_secret(password):
    if not password:
        raise InvalidInput("the password is empty")
    if len(password) > 1024 or any(c in password for c in "\r\n\0"):
        raise InvalidInput("the password is longer than 1024 characters or holds a line break")
    return password


def _check_tls(tls):
    tls = (tls or "").strip().lower()
    if tls not in TLS_MODES:
        raise InvalidInput("unknown TLS mode %r (choose one of: %s)" % (tls, ", ".join(TLS_MODES)))
    return tls


class ProfileAdministration:
    """
    @param db: an open sqlite connection, as for L{Administration}.
    @param keyring: the L{SecretKeyring} that seals the profiles' passwords.
    """

    def __init__(self, db, clock, keyring):
        self.db = db
        self.clock = clock
        self.keyring = keyring

    def _validated(self, name, host, port, tls, username, password, spf_include):
        host = _check_host(host)
        return dict(
            name=_check_text("profile name", name, 64),
            host=host,
            port=_check_port(port),
            tls=_check_tls(tls),
            username=_check_text("username", username, 256),
            password=_check_secret(password),
            spf_include=_check_host(spf_include) if spf_include else guess_spf_include(host),
        )

    def _insert(self, account, fields):
        if self.db.execute(
            "SELECT 1 FROM smtp_profiles WHERE account_id = ? AND name = ?", (account.id, fields["name"])
        ).fetchone():
            raise Duplicate("account %d already has an SMTP profile named %r" % (account.id, fields["name"]))
        first = not profiles_of(self.db, account.id)
        cursor = self.db.execute(
            "INSERT INTO smtp_profiles (account_id, name, host, port, tls, username, password_sealed,"
            " spf_include, created) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?)",
            (account.id, fields["name"], fields["host"], fields["port"], fields["tls"],
             fields["username"], fields["spf_include"], self.clock.seconds()),
        )
        profile_id = cursor.lastrowid
        self.db.execute(
            "UPDATE smtp_profiles SET password_sealed = ? WHERE id = ?",
            (self.keyring.seal(fields["password"], _context(profile_id)), profile_id),
        )
        if first and not plan_named(account.plan).managed_sending:
            # docs/sending-rules.md, "Deleting a profile": on Nano, outbound paused by losing the last profile
            # resumes when a profile is added again.
            self.db.execute(
                "UPDATE domains SET route = ? WHERE account_id = ? AND route = ?",
                ("%s:%d" % (routes.PROFILE, profile_id), account.id, routes.MANAGED),
            )
        return profile_get(self.db, profile_id)

    def profile_add(self, account_id, name, host, port, tls, username, password, spf_include=None):
        fields = self._validated(name, host, port, tls, username, password, spf_include)
        with transaction(self.db):
            account = store.account_get(self.db, check_id(account_id))
            return self._insert(account, fields)

    def profile_get(self, profile_id):
        return profile_get(self.db, check_id(profile_id, "profile"))

    def profile_list(self, account_id=None):
        if account_id is None:
            return [from_row(SmtpProfile, r) for r in self.db.execute("SELECT * FROM smtp_profiles ORDER BY id")]
        return profiles_of(self.db, store.account_get(self.db, check_id(account_id)).id)

    def profile_login(self, profile_id):
        profile = profile_get(self.db, check_id(profile_id, "profile"))
        row = self.db.execute("SELECT password_sealed FROM smtp_profiles WHERE id = ?", (profile.id,)).fetchone()
        return ProfileLogin(profile, self.keyring.open(row[0], _context(profile.id)))

    def profile_delete(self, profile_id):
        """
        docs/sending-rules.md, "Deleting a profile": a default on this profile falls
        back to the plan baseline and its domains move to the default; losing the
        last profile puts the account's domains back on managed.
        """
        with transaction(self.db):
            profile = profile_get(self.db, check_id(profile_id, "profile"))
            account = store.account_get(self.db, profile.account_id)
            default = None if account.default_route == profile.route else account.default_route
            remaining = [p for p in profiles_of(self.db, account.id) if p.id != profile.id]
            if remaining:
                fallback = (routes.parse_route(default) or routes.plan_baseline(account.plan)).text
            else:
                fallback = routes.MANAGED
            moved = [r[0] for r in self.db.execute(
                "SELECT name FROM domains WHERE account_id = ? AND route = ? ORDER BY name",
                (account.id, profile.route),
            )]
            self.db.execute(
                "UPDATE domains SET route = ? WHERE account_id = ? AND route = ?",
                (fallback, account.id, profile.route),
            )
            self.db.execute("UPDATE accounts SET default_route = ? WHERE id = ?", (default, account.id))
            self.db.execute("DELETE FROM smtp_profiles WHERE id = ?", (profile.id,))
            account = store.account_get(self.db, account.id)
            return {
                "deleted": profile.id,
                "account": account.id,
                "default_route": str(routes.parse_route(account.default_route) or routes.plan_baseline(account.plan)),
                "domains_moved": moved,
                "moved_to": fallback or routes.UNCONFIGURED,
                "paused": routes.refusal(routes.parse_route(fallback) or routes.UNCONFIGURED_ROUTE, account.plan)
                if moved else None,
            }

    def _route_for(self, account, text):
        route = routes.parse_route(text)
        if route is None:
            raise InvalidInput("no route given (expected managed or profile:ID)")
        if route.managed and not plan_named(account.plan).managed_sending:
            raise InvalidInput(
                "the %s plan does not include managed sending: route through an SMTP profile or upgrade"
                % (account.plan,)
            )
        if route.kind == routes.PROFILE:
            profile = profile_get(self.db, route.profile_id)
            if profile.account_id != account.id:
                raise NotFound("no SMTP profile with id %d on account %d" % (route.profile_id, account.id))
        return route

    def _assign(self, name, account, route, make_default, apply_all):
        if make_default:
            # docs/sending-rules.md, "Routes": the default only changes what new domains start on,
            # so domains still following the old baseline keep it.
            current = routes.parse_route(account.default_route) or routes.plan_baseline(account.plan)
            if current.text is not None:
                self.db.execute(
                    "UPDATE domains SET route = ? WHERE account_id = ? AND route IS NULL",
                    (current.text, account.id),
                )
            self.db.execute("UPDATE accounts SET default_route = ? WHERE id = ?", (route.text, account.id))
        if apply_all:
            self.db.execute("UPDATE domains SET route = ? WHERE account_id = ?", (route.text, account.id))
        else:
            self.db.execute("UPDATE domains SET route = ? WHERE name = ?", (route.text, name))
        return self._route_answer(name)

    def _route_answer(self, name):
        domain, account = store.domain_context(self.db, name)
        route = routes.resolve_route(domain, account)
        return {
            "domain": domain.name,
            "route": str(route),
            "account": account.id,
            "account_default": str(routes.parse_route(account.default_route) or routes.plan_baseline(account.plan)),
            "refusal": routes.refusal(route, account.plan),
        }

    def _domain_account(self, domain):
        context = store.domain_context(self.db, check_domain(domain))
        if context is None:
            raise NotFound("no domain %s" % (check_domain(domain),))
        return context

    @staticmethod
    def _confirm(apply_all, yes, route_text):
        if apply_all and not yes:
            raise InvalidInput(
                "--apply-all switches every domain of the account to %s: repeat with --yes to confirm"
                % (route_text,)
            )

    def route_set(self, domain, route, make_default=False, apply_all=False, yes=False):
        self._confirm(apply_all, yes, route)
        with transaction(self.db):
            domain, account = self._domain_account(domain)
            chosen = self._route_for(account, route)
            return self._assign(domain.name, account, chosen, make_default, apply_all)

    def route_new(self, domain, name, host, port, tls, username, password, spf_include=None,
                  make_default=False, apply_all=False, yes=False):
        """docs/sending-rules.md, "Routes" (a new profile for one domain): create it and route the domain to it in one step."""
        fields = self._validated(name, host, port, tls, username, password, spf_include)
        self._confirm(apply_all, yes, "the new profile %r" % (fields["name"],))
        with transaction(self.db):
            domain, account = self._domain_account(domain)
            profile = self._insert(account, fields)
            answer = self._assign(domain.name, account, routes.Route(routes.PROFILE, profile.id),
                                  make_default, apply_all)
        return dict(answer, profile=profile)

    def route_show(self, domain):
        return self._route_answer(self._domain_account(domain)[0].name)

    def key_rotate(self):
        """
        Re-seal every profile password with a new key in one transaction.
        The old key stays in the file until the transaction commits, so an
        interruption at any point leaves every password readable.
        """
        keyring = self.keyring
        keyring.begin_rotation()
        with transaction(self.db):
            rows = self.db.execute("SELECT id, password_sealed FROM smtp_profiles").fetchall()
            for profile_id, sealed in rows:
                context = _context(profile_id)
                self.db.execute(
                    "UPDATE smtp_profiles SET password_sealed = ? WHERE id = ?",
                    (keyring.seal(keyring.open(sealed, context), context), profile_id),
                )
        keyring.finish_rotation()
        self._keyring = keyring
        return {"key_id": keyring.current_id, "profiles_resealed": len(rows)}
