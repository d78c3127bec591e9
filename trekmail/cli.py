"""
The operator's command line, C{trekmail}.  It parses arguments and
formats answers; the rules live in L{trekmail.realm.admin} and
L{trekmail.admin.operations}, shared with the admin HTTP API.  A refused
request prints one line on stderr and exits 1, leaving the store
unchanged; a check that finds a fault (doctor, profile test, domain
verify) prints its report and exits 1; a usage error exits 2.
"""

import argparse
import datetime
import json
import os
import sys
import time

from trekmail import datacli, maillog, settings
from trekmail.admin import operations
from trekmail.admin.operations import present
from trekmail.config import Config, ConfigError, config_path
from trekmail.crypto import SecretKeyError, SecretKeyring
from trekmail.queue import admin as queue_admin
from trekmail.realm import database, ldapsync, schema
from trekmail.realm.admin import Administration
from trekmail.realm.errors import RealmError


class WallClock:
    def seconds(self):
        return time.time()


def _read_password(stdin):
    line = stdin.readline()
    return line.rstrip("\r\n")


def _scalar(value, key=""):
    """A value as the human output shows it: epoch times (C{created}, C{..._at}) as ISO 8601 UTC."""
    if value is None:
        return ""
    if (key == "created" or key.endswith("_at")) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).isoformat(timespec="seconds")
    return value


def _print(result, as_json, out):
    plain = present(result)
    if as_json:
        out.write(json.dumps(plain, indent=2, sort_keys=True) + "\n")
    elif isinstance(plain, list):
        for item in plain:
            out.write(_one_line(item) + "\n")
    elif isinstance(plain, dict):
        for key, value in plain.items():
            if isinstance(value, list):
                out.write("%s:\n" % (key,))
                for item in value:
                    out.write("  - %s\n" % (_one_line(item),))
            else:
                out.write("%s: %s\n" % (key, _scalar(value, key)))
    elif plain is not None:
        out.write("%s\n" % (plain,))


def _one_line(item):
    if isinstance(item, dict):
        return "  ".join("%s: %s" % (k, ",".join(map(str, v)) if isinstance(v, list) else _scalar(v, k))
                         for k, v in item.items())
    return str(item)


def _reports_failure(result):
    """
    Checking verbs (doctor, smtp profile test, domain verify) exit 1 when
    what they checked fails, so scripts and monitoring can act on it.
    """
    if not isinstance(result, dict):
        return False
    return result.get("ok") is False or result.get("result") == "fail" or result.get("status") == "pending"


def _dns_records(admin, args):
    records = [{"name": n, "type": t, "value": v} for n, t, v in admin.domain_dns(args.domain)]
    for record in records:
        host = record["value"].split()[-1].rstrip(".") if record["type"] == "MX" else None
        if host is not None and (host == "localhost" or "." not in host):
            args.stderr.write(
                "trekmail: note: the MX record names %r, which no other server can reach: set [server] hostname "
                "to this server's public name before publishing these records\n" % (host,))
    return records


def _parser():
    parser = argparse.ArgumentParser(prog="trekmail", description="TrekMail administration")
    parser.add_argument("--config", help="configuration file (default: $TREKMAIL_CONFIG or etc/trekmail.ini)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    nouns = parser.add_subparsers(dest="noun", required=True)

    account = nouns.add_parser("account").add_subparsers(dest="verb", required=True)
    p = account.add_parser("add")
    p.add_argument("owner_email")
    p.add_argument("--plan", required=True)
    p.add_argument("--trial", action="store_true", help="a never-paid trial account")
    p.add_argument("--registered", help="registration date, YYYY-MM-DD (default: today)")
    p.add_argument("--verified", action="store_true", help="the owner email is verified")
    p.set_defaults(run=lambda a, o: a.account_add(
        o.owner_email, o.plan, trial=o.trial, registered=o.registered, verified=o.verified))
    p = account.add_parser("set")
    p.add_argument("id")
    p.add_argument("--plan")
    p.add_argument("--verified", action="store_true", default=None)
    p.add_argument("--paid", action="store_true", default=None)
    p.set_defaults(run=lambda a, o: a.account_set(o.id, plan=o.plan, verified=o.verified, paid=o.paid))
    p = account.add_parser("suspend")
    p.add_argument("id")
    p.add_argument("--reason", required=True, help="billing, deliverability or abuse")
    p.set_defaults(run=lambda a, o: a.account_suspend(o.id, o.reason))
    p = account.add_parser("unsuspend")
    p.add_argument("id")
    p.set_defaults(run=lambda a, o: a.account_unsuspend(o.id))
    p = account.add_parser("show")
    p.add_argument("id")
    p.set_defaults(run=lambda a, o: a.account_get(o.id))
    account.add_parser("list").set_defaults(run=lambda a, o: a.account_list())
    p = account.add_parser("delete", help="delete the account and everything under it")
    p.add_argument("id")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(run=lambda a, o: a.account_delete(o.id, yes=o.yes))

    domain = nouns.add_parser("domain").add_subparsers(dest="verb", required=True)
    p = domain.add_parser("add")
    p.add_argument("domain")
    p.add_argument("--account", required=True)
    p.set_defaults(run=lambda a, o: a.domain_add(o.domain, o.account))
    p = domain.add_parser("dns")
    p.add_argument("domain")
    p.set_defaults(run=_dns_records)
    p = domain.add_parser("verify", help="check SPF, DKIM, DMARC and MX in DNS; Pending -> Active")
    p.add_argument("domain")
    p.set_defaults(run=_networked("domain_verify", domain="domain"))
    p = domain.add_parser("show")
    p.add_argument("domain")
    p.set_defaults(run=lambda a, o: a.domain_get(o.domain))
    p = domain.add_parser("list")
    p.add_argument("--account")
    p.set_defaults(run=lambda a, o: a.domain_list(o.account))
    p = domain.add_parser("delete", help="delete the domain, its DKIM key and route")
    p.add_argument("domain")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.add_argument("--force", action="store_true", help="also delete its mailboxes")
    p.set_defaults(run=lambda a, o: a.domain_delete(o.domain, yes=o.yes, force=o.force))

    dkim = domain.add_parser("dkim", help="DKIM key rotation (docs/dkim.md)").add_subparsers(
        dest="action", required=True)
    p = dkim.add_parser("rotate", help="a new key under a new selector; signing switches to it once DNS shows it")
    p.add_argument("domain")
    p.set_defaults(run=lambda a, o: a.dkim_rotate(o.domain))
    p = dkim.add_parser("status", help="the domain's selectors: pending, active, retiring, retired, with dates")
    p.add_argument("domain")
    p.set_defaults(run=lambda a, o: a.dkim_status(o.domain))

    p = domain.add_parser("catchall", help="deliver mail for unknown addresses of DOMAIN to MAILBOX")
    p.add_argument("domain")
    p.add_argument("mailbox", nargs="?")
    p.add_argument("--off", action="store_true", help="turn the catch-all off")
    p.set_defaults(run=_catchall)

    alias = nouns.add_parser("alias").add_subparsers(dest="verb", required=True)
    p = alias.add_parser("add", help="an address that delivers to mailboxes of the same account")
    p.add_argument("address")
    p.add_argument("targets", nargs="*", metavar="TARGET")
    p.add_argument("--to", help="ADDR[,ADDR...], the same as TARGET...")
    p.set_defaults(run=lambda a, o: a.alias_add(o.address, o.targets + (o.to or "").split(",")))
    p = alias.add_parser("list")
    p.add_argument("domain", nargs="?")
    p.add_argument("--domain", dest="domain_option")
    p.set_defaults(run=lambda a, o: a.alias_list(o.domain or o.domain_option))
    p = alias.add_parser("remove")
    p.add_argument("address")
    p.set_defaults(run=lambda a, o: a.alias_remove(o.address))

    mailbox = nouns.add_parser("mailbox").add_subparsers(dest="verb", required=True)
    p = mailbox.add_parser("add")
    p.add_argument("address")
    p.add_argument("--password-stdin", action="store_true", required=True)
    p.set_defaults(run=lambda a, o: a.mailbox_add(o.address, _read_password(o.stdin)))
    p = mailbox.add_parser("passwd")
    p.add_argument("address")
    p.add_argument("--password-stdin", action="store_true", required=True)
    p.set_defaults(run=lambda a, o: a.mailbox_passwd(o.address, _read_password(o.stdin)))
    p = mailbox.add_parser("pause")
    p.add_argument("address")
    p.set_defaults(run=lambda a, o: a.mailbox_pause(o.address, True))
    p = mailbox.add_parser("resume")
    p.add_argument("address")
    p.set_defaults(run=lambda a, o: a.mailbox_pause(o.address, False))
    p = mailbox.add_parser("list")
    p.add_argument("--domain")
    p.set_defaults(run=lambda a, o: a.mailbox_list(o.domain))
    p = mailbox.add_parser("delete", help="delete the mailbox; its mail is kept for [realm] deleted_mail_retention_days")
    p.add_argument("address")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(run=lambda a, o: a.mailbox_delete(o.address, yes=o.yes))
    p = mailbox.add_parser("rename", help="change the address; mail, DAV data and password stay")
    p.add_argument("address")
    p.add_argument("new_address")
    p.set_defaults(run=lambda a, o: a.mailbox_rename(o.address, o.new_address))

    queue = nouns.add_parser("queue").add_subparsers(dest="verb", required=True)
    queue.add_parser("list").set_defaults(run=lambda a, o: queue_admin.queue_list(a.config.data_path("queue")))
    queue.add_parser("flush").set_defaults(run=lambda a, o: queue_admin.queue_flush(a.config.data_path("queue")))
    p = queue.add_parser("delete")
    p.add_argument("queue_id")
    p.set_defaults(run=lambda a, o: queue_admin.queue_delete(a.config.data_path("queue"), o.queue_id))

    directory = nouns.add_parser("directory").add_subparsers(dest="verb", required=True)
    directory.add_parser(
        "sync", help="make local rows and DKIM keys for every LDAP directory domain"
    ).set_defaults(run=lambda a, o: ldapsync.sync(a.db, a.settings, a.clock))

    suppression = nouns.add_parser("suppression").add_subparsers(dest="verb", required=True)
    p = suppression.add_parser("list")
    p.add_argument("--domain", help="only this sending domain")
    p.set_defaults(run=lambda a, o: queue_admin.suppression_list(a.db, o.domain))
    p = suppression.add_parser("remove")
    p.add_argument("address")
    p.add_argument("--domain", help="only for this sending domain (default: all)")
    p.set_defaults(run=lambda a, o: queue_admin.suppression_remove(a.db, o.address, o.domain))
    _sending_commands(nouns)
    _log_commands(nouns)
    datacli.add_commands(nouns)
    return parser


DEFAULT_LOG = "twistd.log"
"""twistd's own default C{--logfile}, in the directory the server runs in."""


def _log_commands(nouns):
    """C{log}: reads the server's log file, so it needs neither the configuration nor the database."""
    log = nouns.add_parser("log").add_subparsers(dest="verb", required=True)
    p = log.add_parser("trace", help="follow a message (queue id) or an address through the mail log")
    p.add_argument("target", metavar="QUEUE_ID|ADDRESS")
    p.add_argument("--since", help="only lines from this ISO 8601 date or time on (UTC unless it says)")
    p.add_argument("--file", default=DEFAULT_LOG,
                   help="the log file (default: ./twistd.log); its rotated copies FILE.1, FILE.2... are read too")
    p.set_defaults(standalone=_trace)


def _trace(options):
    try:
        return maillog.trace(maillog.log_files(options.file), options.target, options.since)
    except ValueError as e:
        raise RealmError("--since: %s" % (e,))
    except OSError as e:
        raise RealmError("cannot read the log: %s" % (e,))


def _verb(name, /, **arguments):
    """A CLI verb that runs the shared implementation; C{arguments} maps its keywords to option names."""
    def run(admin, options):
        kwargs = {k: getattr(options, v) if isinstance(v, str) else v(options) for k, v in arguments.items()}
        return operations.run_verb(admin.db, admin.verb_settings(name), admin.clock, name, kwargs)
    return run


def _networked(name, /, **arguments):
    """
    A verb that talks to the network (provider, DNS): runs the shared
    implementation on a reactor of its own for this one command.
    """
    def run(admin, options):
        from twisted.internet import reactor
        from twisted.python.failure import Failure

        from trekmail.relay.mx import make_resolver
        from trekmail.relay.smarthost import Smarthost

        from trekmail.workerthreads import WorkerThreads

        threaded = database.ThreadedDatabase(admin.db, reactor)
        hashing = WorkerThreads(reactor, 1, "trekmail-password-hash")
        ops = operations.Operations(
            settings=admin.verb_settings(name), database=threaded, reactor=reactor,
            resolver=make_resolver(admin.config.get("dns", "nameservers"), reactor),
            smarthost=Smarthost(reactor, admin.config.get("server", "hostname"),
                                trust_root=settings.smarthost_trust(admin.config),
                                timeout=admin.config.get("smarthost", "timeout")),
            hashing=hashing,
        )
        kwargs = {k: getattr(options, v) if isinstance(v, str) else v(options) for k, v in arguments.items()}
        outcome = []

        def go():
            d = ops.call(name, **kwargs)
            d.addBoth(outcome.append)
            d.addBoth(lambda _: reactor.stop())

        threaded.start()
        hashing.start()
        reactor.callWhenRunning(go)
        reactor.run(installSignalHandlers=False)
        hashing.stop()
        threaded.stop()
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]
    return run


def _profile_fields(p, required=True):
    p.add_argument("--name", required=required)
    p.add_argument("--host", required=required)
    p.add_argument("--port", required=required, type=int)
    p.add_argument("--tls", required=required, help="implicit, starttls or none")
    p.add_argument("--username", required=required)
    p.add_argument("--password-stdin", action="store_true", required=required)
    p.add_argument("--spf-include", help="the provider's SPF include (default: known for SES, SendGrid, Mailgun, Postmark)")


_PROFILE_FIELDS = dict(name="name", host="host", port="port", tls="tls", username="username",
                       password=lambda o: _read_password(o.stdin), spf_include="spf_include")


def _sending_commands(nouns):
    smtp = nouns.add_parser("smtp").add_subparsers(dest="verb", required=True)
    profile = smtp.add_parser("profile").add_subparsers(dest="action", required=True)
    p = profile.add_parser("add")
    p.add_argument("--account", required=True)
    _profile_fields(p)
    p.set_defaults(run=_verb("profile_add", account_id="account", **_PROFILE_FIELDS))
    p = profile.add_parser("list")
    p.add_argument("--account")
    p.set_defaults(run=_verb("profile_list", account_id="account"))
    p = profile.add_parser("show")
    p.add_argument("id")
    p.set_defaults(run=_verb("profile_get", profile_id="id"))
    p = profile.add_parser("delete")
    p.add_argument("id")
    p.set_defaults(run=_verb("profile_delete", profile_id="id"))
    p = profile.add_parser("test", help="connect, authenticate and send a probe message")
    p.add_argument("id")
    p.add_argument("--to", help="probe recipient (default: the account owner)")
    p.add_argument("--from", dest="sender", help="probe sender (default: the account owner)")
    p.set_defaults(run=_networked("profile_test", profile_id="id", to="to", sender="sender"))
    p = profile.add_parser("rotate-key", help="re-encrypt every profile password with a new key")
    p.set_defaults(run=_verb("key_rotate"))

    p = smtp.add_parser("route", help="show or set how a domain sends")
    p.add_argument("domain")
    p.add_argument("route", nargs="?", help="managed, profile:ID, or new (with the profile options)")
    p.add_argument("--make-default", action="store_true", help="new domains of the account start on this route")
    p.add_argument("--apply-all", action="store_true", help="switch every domain of the account to this route")
    p.add_argument("--yes", action="store_true", help="confirm --apply-all")
    _profile_fields(p, required=False)
    p.set_defaults(run=_route)

    p = nouns.add_parser("doctor", help="run the ten checks of \"I can't send\" for a mailbox")
    p.add_argument("address")
    p.add_argument("--recipients", type=int, help="recipients of the message that fails (check 5)")
    p.add_argument("--password-stdin", action="store_true", help="also check the mailbox password (check 8)")
    p.set_defaults(run=_networked(
        "doctor", address="address", recipients="recipients",
        password=lambda o: _read_password(o.stdin) if o.password_stdin else None))


def _catchall(admin, options):
    if options.off == (options.mailbox is not None):
        raise RealmError("give either a MAILBOX or --off")
    return admin.domain_catchall(options.domain, options.mailbox)


def _route(admin, options):
    common = dict(make_default=options.make_default, apply_all=options.apply_all, yes=options.yes)
    if options.route is None:
        return _verb("route_show", domain="domain")(admin, options)
    if options.route == "new":
        if not options.password_stdin:
            raise RealmError("a new profile needs --name --host --port --tls --username --password-stdin")
        fields = dict(_PROFILE_FIELDS, domain="domain", **{k: (lambda o, v=v: v) for k, v in common.items()})
        return _verb("route_new", **fields)(admin, options)
    fields = dict(domain="domain", route="route", **{k: (lambda o, v=v: v) for k, v in common.items()})
    return _verb("route_set", **fields)(admin, options)


class _CommandLine(Administration):
    """The realm's verbs, with the configuration the CLI's other verbs read (here, in the wiring, only)."""

    def __init__(self, db, config, clock):
        super().__init__(db, settings.realm(config), clock)
        self.config = config

    def verb_settings(self, verb):
        """The shared verbs' settings; the secrets key is read (or made) only for a verb that uses it."""
        needs_key = verb in operations.PROFILE_VERBS or verb in ("profile_test", "doctor")
        return operations.VerbSettings(
            realm=self.settings, queue_dir=self.config.data_path("queue"),
            keyring=SecretKeyring.load(self.config.secret_key_path) if needs_key else None)


def main(argv=None, stdin=None, stdout=None, stderr=None, clock=None):
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    options = _parser().parse_args(argv)
    options.stdin = stdin
    options.stderr = stderr
    try:
        if getattr(options, "standalone", None) is not None:
            return _finish(options.standalone(options), options.json, stdout)
        config = Config.from_file(config_path(options.config))
        db = database.connect(config.database_path)
        try:
            database.upgrade(db, schema.SCHEMAS)
            admin = _CommandLine(db, config, clock or WallClock())
            result = options.run(admin, options)
        finally:
            db.close()
    except ConfigError as e:
        stderr.write("trekmail: configuration error: %s\n" % (e,))
        return 78
    except (RealmError, SecretKeyError) as e:
        stderr.write("trekmail: %s\n" % (e,))
        return 1
    return _finish(result, options.json, stdout)


def _finish(result, as_json, stdout):
    try:
        _print(result, as_json, stdout)
        stdout.flush()
    except BrokenPipeError:
        # The reader went away (`trekmail ... | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if _reports_failure(present(result)) else 0


if __name__ == "__main__":
    sys.exit(main())
