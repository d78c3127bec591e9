"""
The operator's rules for aliases and catch-alls (docs/addressing.md),
checked before the first write.  An alias or a catch-all delivers only to
mailboxes of the account that owns its domain: one customer's address
can never be pointed at another customer's mailbox.
"""

from trekmail.realm import store
from trekmail.realm.errors import Duplicate, InvalidInput, NotFound

MAX_TARGETS = 50
"""Mailboxes one alias fans out to; a larger group is a distribution list, not an alias."""


def _hosted(db, address):
    name = address.rpartition("@")[2]
    domain = store.domain_find(db, name)
    if domain is None:
        raise NotFound("domain %s is not hosted here" % (name,))
    return domain


def _same_account(db, domain, address):
    context = store.mailbox_context(db, address)
    if context is None:
        raise NotFound("no mailbox %s: aliases and catch-alls deliver to mailboxes of the same account" % (address,))
    if context.account.id != domain.account_id:
        raise InvalidInput("%s belongs to another account than %s" % (address, domain.name))
    return address


def add(db, address, targets, now):
    domain = _hosted(db, address)
    if store.mailbox_find(db, address) is not None:
        raise Duplicate("%s is a mailbox: an alias needs an address of its own" % (address,))
    targets = tuple(dict.fromkeys(targets))
    if not targets:
        raise InvalidInput("an alias needs at least one mailbox to deliver to")
    if len(targets) > MAX_TARGETS:
        raise InvalidInput("an alias delivers to at most %d mailboxes, not %d" % (MAX_TARGETS, len(targets)))
    if address in targets:
        raise InvalidInput("alias %s cannot deliver to itself" % (address,))
    for target in targets:
        _same_account(db, domain, target)
    return store.alias_add(db, address, domain.name, targets, now)


def set_catchall(db, name, mailbox):
    """Point domain C{name}'s catch-all at C{mailbox}, or turn it off with C{None}."""
    domain = store.domain_get(db, name)
    if mailbox is not None:
        _same_account(db, domain, mailbox)
    return store.domain_update(db, name, catchall=mailbox)
