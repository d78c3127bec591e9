"""
C{trekmail doctor ADDRESS}: the ten checks of "I can't send", in order,
against the live state.  Every check is reported as C{blocking} (TrekMail
refuses to send until it is fixed), C{advisory} (worth fixing, but mail
still leaves: unverified DNS, recipients rejecting) or C{ok}; the first
blocking one is the answer, with its fix.

Each check reuses the rule that enforces it (L{trekmail.policy.gate},
L{trekmail.policy.limits}, the cred hash check, the smarthost client,
C{domain verify}), so the diagnosis can never drift from what the servers
actually do.
"""

from twisted.internet import defer

from trekmail.crypto import SecretKeyError, verify_password
from trekmail.policy import counters, gate, limits
from trekmail.realm import profiles, routes, store
from trekmail.realm.admin import check_address
from trekmail.realm.errors import InvalidInput
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


def _facts(db, keyring, address, now):
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
            login = profiles.ProfileAdministration(db, None, keyring).profile_login(route.profile_id)
        except SecretKeyError as e:
            login = e
    bounces = db.execute(
        "SELECT address, last_diagnostic FROM hard_bounces WHERE domain = ? AND last_at > ? ORDER BY last_at DESC",
        (context.domain.name, now - RECENT_SECONDS),
    ).fetchall()
    return context, caps, counted, route, login, [tuple(b) for b in bounces]


BLOCKING, ADVISORY, OK = "blocking", "advisory", "ok"

ADVISORY_CHECKS = frozenset((2, 10))
"""Checks whose failure does not stop TrekMail sending: unverified DNS
(an unverified domain still sends) and rejections on the recipient side."""

MAX_RECIPIENTS = 10**6


def _check_recipients(value):
    if value is None:
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 7:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RECIPIENTS:
        raise InvalidInput("recipients must be a number from 0 to %d, not %s" % (MAX_RECIPIENTS, str(value)[:40]))
    return value


def _report(address, results):
    """
    The verdict from every check's C{(number, problem, fix)}, C{problem}
    None when it passed.  C{check}, C{problem} and C{fix} at the top name
    the first blocking check: the one to fix first.
    """
    checks = []
    for number, problem, fix in results:
        entry = {"check": number, "title": TITLES[number], "status": OK}
        if problem:
            entry.update(status=ADVISORY if number in ADVISORY_CHECKS else BLOCKING, problem=problem, fix=fix)
        checks.append(entry)
    blocking = [c for c in checks if c["status"] == BLOCKING]
    advisory = [c for c in checks if c["status"] == ADVISORY]
    answer = {"address": address, "checks": checks}
    also = "; ".join("check %d (%s) %s: %s" % (c["check"], c["title"], c["status"], c["problem"])
                     for c in blocking[1:] + advisory)
    if blocking:
        first = blocking[0]
        answer.update(result="fail", check=first["check"], title=first["title"], problem=first["problem"],
                      fix=first["fix"], summary="check %d (%s) blocks sending: %s. Fix: %s%s" % (
                          first["check"], first["title"], first["problem"], first["fix"],
                          ". Also: " + also if also else ""))
    elif advisory:
        answer.update(result="advisory", summary="nothing blocks sending. Advisory: " + also)
    else:
        answer.update(result="all clear", note="everything on this side is green; if mail still fails,"
                                               " the recipient side is rejecting it")
    return answer


@defer.inlineCallbacks
def diagnose(operations, address, recipients=None, password=None):
    """
    Every check runs, whatever the ones before it found, so a paused
    mailbox is not hidden behind unverified DNS.

    @param operations: an L{Operations} (database, resolver, smarthost).
    @param recipients: the size of the message that fails, for check 5.
    @param password: the mailbox password the user types, for check 8.
    """
    address = check_address(address)
    recipients = _check_recipients(recipients)
    now = operations.reactor.seconds()
    facts = yield operations.database.run(_facts, operations.settings.keyring, address, now)
    if facts is None:
        return _report(address, [(8, "mailbox %s does not exist" % (address,),
                                  "check the mailbox list for a typo (`trekmail mailbox list`), or create it with"
                                  " `trekmail mailbox add %s --password-stdin`" % (address,))])
    context, caps, counted, route, login, bounces = facts
    domain = context.domain.name
    results = []

    def check(number, denial_text, fix):
        results.append((number, denial_text or None, fix))

    check(1, getattr(gate.verification_denial(context.account, now), "text", None),
          "the owner %s clicks the verification link (resend it from the dashboard), then"
          " `trekmail account set %d --verified`" % (context.account.owner_email, context.account.id))
    dns = yield operations.domain_verify(domain)
    failing = [r for r in dns["records"] if r["status"] == dnsverify.FAIL]
    check(2, failing and "domain %s DNS is not verified: %s %s is wrong" % (
        domain, failing[0]["record"], failing[0]["name"]),
        "; ".join(r["fix"] for r in failing) + "; then run `trekmail domain verify %s`" % (domain,))
    check(3, getattr(gate.route_denial(context), "text", None),
          "add an SMTP profile and route the domain to it (`trekmail smtp route %s new ...`),"
          " or upgrade to Starter or higher" % (domain,))
    check(4, getattr(limits.over_limit(caps, counted), "text", None),
          "wait: the hourly cap clears within an hour, daily caps at 00:00 UTC; or upgrade the plan")
    check(5, getattr(limits.recipients_denial(caps, recipients), "text", None),
          "split the message into batches of %d recipients or fewer, or upgrade" % (caps.recipients_per_message,))
    check(6, getattr(gate.paused_denial(context.mailbox), "text", None),
          "resume it with `trekmail mailbox resume %s` (if an admin paused it for abuse, ask why first)" % (address,))
    check(7, getattr(gate.suspension_denial(context.account), "text", None),
          "fix the cause with support, then `trekmail account unsuspend %d`" % (context.account.id,))
    ok = True
    if password is not None:
        ok, _ = yield _verify(operations, password, context.mailbox.password_hash)
    check(8, None if ok else "the password given is not this mailbox's password",
          "SMTP wants the mailbox password, not the account owner's; reset it with"
          " `trekmail mailbox passwd %s --password-stdin`" % (address,))
    if route.kind != routes.PROFILE:
        check(9, None, None)
    elif isinstance(login, SecretKeyError):
        check(9, "the profile's password cannot be decrypted: %s" % (login,),
              "re-enter it: `trekmail smtp profile delete %d` and add it again" % (route.profile_id,))
    else:
        result = yield operations.smarthost.check_login(login)
        check(9, None if result.ok else result.explanation,
              "fix SMTP profile %d (credentials, host, port, TLS), then `trekmail smtp profile test %d`"
              % (route.profile_id, route.profile_id))
    check(10, bounces and "%d recipient address(es) rejected mail from %s in the last 7 days, latest %s: %s" % (
        len(bounces), domain, bounces[0][0], bounces[0][1]),
        "check the recipient addresses, your sender reputation (warmup, SPF/DKIM alignment) and strengthen DMARC;"
        " see `trekmail suppression list --domain %s`" % (domain,))
    return _report(address, results)


def _verify(operations, password, stored):
    return operations.hashing.run(verify_password, password, stored, operations.settings.realm.scrypt_n)
