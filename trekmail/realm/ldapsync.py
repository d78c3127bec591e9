"""
C{trekmail directory sync}: make the local rows and DKIM keys of every
directory domain now.

The server makes them lazily, the first time a domain is looked up
(L{trekmail.realm.ldapdirectory}); an operator who adds a domain to the
directory usually needs them before that, to publish the DKIM record
that C{trekmail domain dns} prints and to add SMTP profiles for the
account.  Both paths write through L{trekmail.realm.ldaplocal}, so they
agree; running sync again changes nothing that is current.
"""

from trekmail.realm import dkimkeys, ldaplocal
from trekmail.realm.admin import check_domain
from trekmail.realm.errors import DirectoryUnavailable, InvalidInput, RealmError
from trekmail.realm.ldapclient import LdapClient
from trekmail.realm.ldapdirectory import (
    Malformed,
    account_attributes,
    parse_account,
    parse_account_number,
)
from trekmail.realm.ldapsettings import fill


def sync(db, settings, clock):
    """
    One row per directory domain name: C{{"domain", "account", "status"}},
    status being C{added}, C{current} or C{skipped: why}.

    @raise RealmError: when the realm is not LDAP or the directory cannot
        be asked (nothing is written then).
    """
    if settings.ldap is None:
        raise InvalidInput("[realm] backend is not ldap: there is no directory to sync from")
    client = LdapClient(settings.ldap, reactor=None)
    try:
        return _sync(db, settings.data_dir, settings.ldap, client, clock)
    except DirectoryUnavailable as e:
        raise RealmError("directory unavailable: %s" % (e,)) from None
    finally:
        client.stop()


def _sync(db, data_dir, settings, client, clock):
    attributes = settings.attributes
    every_domain = settings.domain_filter.replace("%s", "*")
    entries = client.find_all(
        settings.domain_base, every_domain, [attributes["domain"], attributes["account"]]
    )
    accounts = {}
    rows = []
    for entry in entries:
        for name in entry.values(attributes["domain"]):
            try:
                name = check_domain(name)
                number = parse_account_number(entry, attributes)
                if number not in accounts:
                    accounts[number] = _account(client, settings, number)
                status = _local(db, data_dir, clock, name, accounts[number])
            except (InvalidInput, Malformed) as e:
                number, status = None, "skipped: %s" % (e,)
            rows.append({"domain": name, "account": number, "status": status})
    return sorted(rows, key=lambda row: row["domain"])


def _account(client, settings, number):
    found = client.find(
        settings.account_base,
        fill(settings.account_filter, number),
        account_attributes(settings.attributes),
    )
    if len(found) != 1:
        raise Malformed("%d account entries have number %d" % (len(found), number))
    return parse_account(found[0], number, settings.attributes)


def _local(db, data_dir, clock, name, account):
    if ldaplocal.local_domain(db, name, account) is not None:
        return "current"
    public_key = dkimkeys.generate(data_dir, name)
    ldaplocal.add_domain(
        db, name, account, clock.seconds(), dkimkeys.DEFAULT_SELECTOR, public_key
    )
    return "added"
