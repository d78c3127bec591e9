"""
The operator's verbs on accounts, domains and mailboxes, with their input
checks.  The CLI and the admin HTTP API both call these, so a rule holds
the same whichever door a change comes through.  Every check runs before
the first write: a refused request leaves the store as it was.
"""

import datetime
import re

from trekmail import idn
from trekmail.crypto import hash_password
from trekmail.mailstore import mailbox_address_problem
from trekmail.plans import UnknownPlan, plan_named
from trekmail.policy.passwords import password_problem
from trekmail.realm import aliases, dkimkeys, dkimselectors, lifecycle, retention, store
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound
from trekmail.realm.model import SUSPENSION_REASONS

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(r"^(?:%s\.)+[a-z][a-z0-9-]{0,62}$" % (_LABEL,))
_LOCAL = re.compile(r"^[a-z0-9!#$&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$&'*+/=?^_`{|}~-]+)*$")


def check_domain(name):
    """
    The domain as the realm keeps it: lower-case, and in A-labels when it
    is internationalised (C{例子.测试} -> C{xn--fsqu00a.xn--0zwm56d}), so
    that both spellings name one domain (L{trekmail.idn} says why).
    """
    name = (name or "").strip().lower().rstrip(".")
    try:
        name = idn.ascii_domain(name)
    except idn.NotAnIDN as e:
        raise InvalidInput("%r is %s" % (name, e)) from None
    if len(name) > 253 or not _DOMAIN.match(name):
        raise InvalidInput("%r is not a domain name (expected something like example.com)" % (name,))
    return name


def check_address(address):
    """The address as the realm keeps it: the local part NFC and lower-case (it may be UTF-8), the domain as L{check_domain}."""
    address = (address or "").strip()
    local, at, domain = address.rpartition("@")
    local = idn.local_part(local)
    if local.isascii():
        problem = None if len(local) <= 64 and _LOCAL.match(local) else "not a plain name"
    else:
        problem = idn.local_part_problem(local)
    if not at or problem is not None:
        raise InvalidInput("%r is not an email address (expected name@example.com)" % (address,))
    return "%s@%s" % (local, check_domain(domain))


def check_mailbox_address(address):
    """L{check_address}, and the address can be delivered to (L{mailbox_address_problem})."""
    address = check_address(address)
    problem = mailbox_address_problem(address)
    if problem:
        raise InvalidInput("%r cannot be a mailbox: %s" % (address, problem))
    return address


def _check_plan(name):
    try:
        return plan_named(name).name
    except UnknownPlan as e:
        raise InvalidInput(str(e)) from None


def _check_date(text):
    try:
        return datetime.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidInput("%r is not a date (expected YYYY-MM-DD)" % (text,)) from None


def _check_password(password):
    problem = password_problem(password)
    if problem is not None:
        raise InvalidInput(problem)
    return password


class Administration:
    """
    @param db: an open sqlite connection (the CLI's own, or the one owned
        by the server's database thread).
    @param settings: the L{trekmail.realm.settings.RealmSettings}.
    @param clock: an C{IReactorTime}; its C{seconds()} dates new domains
        and mailboxes.
    """

    def __init__(self, db, settings, clock):
        self.db = db
        self.settings = settings
        self.clock = clock

    def _directory_owned(self, what):
        """
        With the LDAP backend the directory is the source of truth: a local
        write would be silently overridden, so it is refused instead.
        """
        if self.settings.ldap is not None:
            raise InvalidInput(
                "%s live in the LDAP directory ([realm] backend = ldap): change them there"
                " (`trekmail directory sync` picks up new domains)" % (what,)
            )

    def _no_ldap_aliases(self):
        if self.settings.ldap is not None:
            raise InvalidInput("aliases and catch-alls are not available with [realm] backend = ldap yet")

    def _today(self):
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc).date()

    def account_add(self, owner_email, plan, trial=False, registered=None, verified=False):
        self._directory_owned("accounts")
        owner_email = check_address(owner_email)
        plan = _check_plan(plan)
        registered = self._today() if registered is None else _check_date(registered)
        return store.account_add(self.db, owner_email, plan, not trial, registered, verified)

    def account_set(self, account_id, plan=None, verified=None, paid=None):
        self._directory_owned("accounts")
        changes = {}
        if plan is not None:
            changes["plan"] = _check_plan(plan)
        if verified is not None:
            changes["owner_verified"] = int(verified)
        if paid is not None:
            changes["paid"] = int(paid)
        return store.account_update(self.db, check_id(account_id), **changes)

    def account_suspend(self, account_id, reason):
        self._directory_owned("accounts")
        if reason not in SUSPENSION_REASONS:
            raise InvalidInput(
                "unknown suspension reason %r (choose one of: %s)"
                % (reason, ", ".join(SUSPENSION_REASONS))
            )
        return store.account_update(self.db, check_id(account_id), suspension=reason)

    def account_unsuspend(self, account_id):
        self._directory_owned("accounts")
        return store.account_update(self.db, check_id(account_id), suspension=None)

    def account_list(self):
        return store.account_list(self.db)

    def account_get(self, account_id):
        return store.account_get(self.db, check_id(account_id))

    def domain_add(self, name, account_id):
        self._directory_owned("domains")
        name = check_domain(name)
        account = store.account_get(self.db, check_id(account_id))
        if store.domain_find(self.db, name) is not None:
            raise Duplicate("domain %s already exists" % (name,))
        selector = dkimselectors.first_selector(self.settings.dkim)
        public_key = dkimkeys.generate(self.settings.data_dir, name, selector)
        return store.domain_add(
            self.db, name, account.id, self.clock.seconds(), selector, public_key,
            route=account.default_route,
        )

    def domain_get(self, name):
        return store.domain_get(self.db, check_domain(name))

    def domain_list(self, account_id=None):
        return store.domain_list(self.db, None if account_id is None else check_id(account_id))

    def domain_dns(self, name):
        domain = self.domain_get(name)
        return dkimkeys.dns_records(domain, self.settings.published,
                                    dkimselectors.records(self.db, domain, self.settings.dkim))

    def dkim_rotate(self, domain):
        """A new key under a new selector, pending until DNS shows it (docs/dkim.md)."""
        name = check_domain(domain)
        dkimselectors.rotate(self.db, self.settings.data_dir, name, self.clock.seconds(), self.settings.dkim)
        return self.dkim_status(name)

    def dkim_status(self, domain):
        return dkimselectors.status(self.db, check_domain(domain), self.settings.dkim)

    def mailbox_add(self, address, password):
        self._directory_owned("mailboxes")
        address = check_mailbox_address(address)
        password = _check_password(password)
        domain = address.rpartition("@")[2]
        if store.domain_find(self.db, domain) is None:
            raise NotFound(
                "domain %s is not hosted here: add it first with `trekmail domain add %s --account ID`"
                % (domain, domain)
            )
        if store.alias_find(self.db, address) is not None:
            raise Duplicate("%s is an alias: remove it first with `trekmail alias remove %s`" % (address, address))
        if store.mailbox_find(self.db, address) is None:
            retention.refuse_data_on_disk(self.settings.data_dir, address)
        hashed = hash_password(password, self.settings.scrypt_n)
        return store.mailbox_add(self.db, address, domain, hashed, self.clock.seconds())

    def mailbox_passwd(self, address, password):
        self._directory_owned("mailboxes")
        address = check_address(address)
        password = _check_password(password)
        store.mailbox_get(self.db, address)
        hashed = hash_password(password, self.settings.scrypt_n)
        store.mailbox_set_password_hash(self.db, address, hashed)
        return store.mailbox_get(self.db, address)

    def mailbox_pause(self, address, paused=True):
        self._directory_owned("mailboxes")
        return store.mailbox_set_paused(self.db, check_address(address), paused)

    def mailbox_list(self, domain=None):
        return store.mailbox_list(self.db, None if domain is None else check_domain(domain))

    def alias_add(self, address, targets):
        """C{targets}: a list of mailbox addresses, or one string of them separated by commas."""
        self._no_ldap_aliases()
        if isinstance(targets, str):
            targets = targets.split(",")
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise InvalidInput("the targets are mailbox addresses: a list, or one string separated by commas")
        targets = [check_address(t) for t in targets if t.strip()]
        return aliases.add(self.db, check_address(address), targets, self.clock.seconds())

    def alias_list(self, domain=None):
        return store.alias_list(self.db, None if domain is None else check_domain(domain))

    def alias_remove(self, address):
        self._no_ldap_aliases()
        return store.alias_remove(self.db, check_address(address))

    def domain_catchall(self, domain, mailbox=None):
        """The catch-all of C{domain} becomes C{mailbox}; C{None} turns it off."""
        self._no_ldap_aliases()
        if mailbox is not None and not isinstance(mailbox, str):
            raise InvalidInput("the catch-all is a mailbox address, or null to turn it off")
        return aliases.set_catchall(self.db, check_domain(domain), None if mailbox is None else check_address(mailbox))

    def mailbox_delete(self, address, yes=False):
        self._directory_owned("mailboxes")
        address = check_address(address)
        _confirm(yes, "deleting mailbox %s closes its sessions and sets its mail aside" % (address,))
        return lifecycle.delete_mailbox(self.db, self.settings.data_dir, address, self.clock.seconds())

    def mailbox_rename(self, address, new_address):
        self._directory_owned("mailboxes")
        return lifecycle.rename_mailbox(
            self.db, self.settings.data_dir, check_address(address), check_mailbox_address(new_address))

    def domain_delete(self, name, yes=False, force=False):
        self._directory_owned("domains")
        name = check_domain(name)
        _confirm(yes, "deleting domain %s removes its DKIM key and route" % (name,))
        return lifecycle.delete_domain(self.db, self.settings.data_dir, name, force, self.clock.seconds())

    def account_delete(self, account_id, yes=False):
        self._directory_owned("accounts")
        account_id = check_id(account_id)
        _confirm(yes, "deleting account %d deletes its domains, mailboxes and SMTP profiles" % (account_id,))
        return lifecycle.delete_account(self.db, self.settings.data_dir, account_id, self.clock.seconds())


def _confirm(yes, what):
    """Destructive verbs run only when asked twice: C{--yes} on the CLI, C{"yes": true} in the admin API."""
    if yes is not True:
        raise InvalidInput("%s: repeat with --yes to confirm (admin API: yes=true)" % (what,))


MAX_ID = 2**63 - 1
"""SQLite's largest INTEGER: a larger id can name no row, and binding it raises OverflowError."""


def check_id(value, what="account"):
    shown = _shorten(value)
    if isinstance(value, str) and len(value) > 19:
        raise InvalidInput("%s is not %s id (expected a number up to %d)" % (shown, _article(what), MAX_ID))
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput("%s is not %s id (expected a number)" % (shown, _article(what))) from None
    if not 0 < number <= MAX_ID:
        raise InvalidInput("%s is not %s id (expected a number from 1 to %d)" % (shown, _article(what), MAX_ID))
    return number


def _shorten(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _article(noun):
    return ("an " if noun[0] in "aeiou" else "a ") + noun
