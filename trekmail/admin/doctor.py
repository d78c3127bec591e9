"""
C{trekmail doctor ADDRESS}: seed 004's ten checks, in its order, against
the live state; the first that fails is the answer, with its fix.

Each check reuses the rule that enforces it (L{trekmail.policy.gate},
L{trekmail.policy.limits}, the cred hash check, the smarthost client,
C{domain verify}), so the diagnosis can never drift from what the servers
actually do.  Checks that need the network (2: DNS, 9: the BYO
provider's login) run only when every check before them has passed.
"""

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from trekmail.crypto import SecretKeyError, verify_password
from trekmail.policy import counters, gate, limits
from trekmail.realm import profiles, routes, store
from trekmail.realm.admin import check_address
from trekmail.relay import dnsverify

TITLES = {
    1: "Account-owner email verified",
    2: "Domain DNS verified",
    3: "Plan and route allow sending",
    4: "Daily and hourly sending limits",
    5: "Recipients per message",
    6: "Mailbox not paused",
    7: "Account not suspended",
    8: "SMTP authentication",
    9: "BYO SMTP profile",
    10: "Recipient servers accepting mail",
}

RECENT_SECONDS = 7 * 86400
"""How far back check 10 looks for remote rejections."""


def _facts(db, config, keyring, address, now):
    context = store.mailbox_context(db, address)
    if context is None:
        return None
    account = context.account
    caps = limits.caps_for(context, now)
    counted = counters.counts(db, address, account.id, now)
    route = routes.resolve_route(context.domain, account)
    login = None
    if route.kind == routes.PROFILE:
        try:
            login = profiles.ProfileAdministration(db, config, None, keyring).profile_login(route.profile_id)
        except SecretKeyError as e:
            login = e
    bounces = db.execute(
        "SELECT address, last_diagnostic FROM hard_bounces WHERE domain = ? AND last_at > ? ORDER BY last_at DESC",
        (context.domain.name, now - RECENT_SECONDS),
    ).fetchall()
    return context, caps, counted, route, login, [tuple(b) for b in bounces]


def _answer(address, number, problem, fix, passed):
    checks = [{"check": n, "title": TITLES[n], "status": "ok"} for n in passed]
    if number is None:
        return {"address": address, "result": "all clear", "checks": checks,
                "note": "everything on this side is green; if mail still fails, the recipient side is rejecting it"}
    checks.append({"check": number, "title": TITLES[number], "status": "fail"})
    return {"address": address, "result": "fail", "check": number, "title": TITLES[number],
            "summary": "check %d (%s) fails: %s. Fix: %s" % (number, TITLES[number], problem, fix),
            "problem": problem, "fix": fix, "checks": checks}


@defer.inlineCallbacks
def diagnose(operations, address, recipients=None, password=None):
    """
    @param operations: an L{Operations} (database, resolver, smarthost).
    @param recipients: the size of the message that fails, for check 5.
    @param password: the mailbox password the user types, for check 8.
    """
    address = check_address(address)
    now = operations.reactor.seconds()
    keyring = operations._keyring()
    facts = yield operations.database.run(_facts, operations.config, keyring, address, now)
    passed = []
    if facts is None:
        return _answer(address, 8, "mailbox %s does not exist" % (address,),
                       "check the mailbox list for a typo (`trekmail mailbox list`), or create it with"
                       " `trekmail mailbox add %s --password-stdin`" % (address,), passed)
    context, caps, counted, route, login, bounces = facts

    def step(number, denial_text, fix):
        if denial_text:
            return _answer(address, number, denial_text, fix, passed)
        passed.append(number)
        return None

    found = step(1, getattr(gate.verification_denial(context.account, now), "text", None),
                 "the owner %s clicks the verification link (resend it from the dashboard), then"
                 " `trekmail account set %d --verified`" % (context.account.owner_email, context.account.id))
    if found:
        return found
    dns = yield operations.domain_verify(context.domain.name)
    failing = [r for r in dns["records"] if r["status"] == dnsverify.FAIL]
    found = step(2, failing and "domain %s DNS is not verified: %s %s is wrong" % (
        context.domain.name, failing[0]["record"], failing[0]["name"]),
        "; ".join(r["fix"] for r in failing) + "; then run `trekmail domain verify %s`" % (context.domain.name,))
    if found:
        return found
    found = step(3, getattr(gate.route_denial(context), "text", None),
                 "add an SMTP profile and route the domain to it (`trekmail smtp route %s new ...`),"
                 " or upgrade to Starter or higher" % (context.domain.name,))
    if found:
        return found
    found = step(4, getattr(limits.over_limit(caps, counted), "text", None),
                 "wait: the hourly cap clears within an hour, daily caps at 00:00 UTC; or upgrade the plan")
    if found:
        return found
    found = step(5, getattr(limits.recipients_denial(caps, recipients or 0), "text", None),
                 "split the message into batches of %d recipients or fewer, or upgrade" % (caps.recipients_per_message,))
    if found:
        return found
    found = step(6, getattr(gate.paused_denial(context.mailbox), "text", None),
                 "resume it with `trekmail mailbox resume %s` (if an admin paused it for abuse, ask why first)" % (address,))
    if found:
        return found
    found = step(7, getattr(gate.suspension_denial(context.account), "text", None),
                 "fix the cause with support, then `trekmail account unsuspend %d`" % (context.account.id,))
    if found:
        return found
    if password is not None:
        ok, _ = yield _verify(operations, password, context.mailbox.password_hash)
        found = step(8, None if ok else "the password given is not this mailbox's password",
                     "SMTP wants the mailbox password, not the account owner's; reset it with"
                     " `trekmail mailbox passwd %s --password-stdin`" % (address,))
        if found:
            return found
    else:
        passed.append(8)
    if route.kind == routes.PROFILE:
        if isinstance(login, SecretKeyError):
            found = step(9, "the profile's password cannot be decrypted: %s" % (login,),
                         "re-enter it: `trekmail smtp profile delete %d` and add it again" % (route.profile_id,))
            if found:
                return found
        result = yield operations.smarthost.check_login(login)
        found = step(9, None if result.ok else result.explanation,
                     "fix SMTP profile %d (credentials, host, port, TLS), then `trekmail smtp profile test %d`"
                     % (route.profile_id, route.profile_id))
        if found:
            return found
    else:
        passed.append(9)
    found = step(10, bounces and "%d recipient address(es) rejected mail from %s in the last 7 days, latest %s: %s" % (
        len(bounces), context.domain.name, bounces[0][0], bounces[0][1]),
        "check the recipient addresses, your sender reputation (warmup, SPF/DKIM alignment) and strengthen DMARC;"
        " see `trekmail suppression list --domain %s`" % (context.domain.name,))
    if found:
        return found
    return _answer(address, None, None, None, passed)


def _verify(operations, password, stored):
    reactor = operations.reactor
    scrypt_n = operations.config.get("realm", "password_scrypt_n")
    return deferToThreadPool(reactor, reactor.getThreadPool(), verify_password, password, stored, scrypt_n)
