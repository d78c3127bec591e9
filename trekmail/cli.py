"""
The operator's command line, C{trekmail}.  It parses arguments and
formats answers; the rules live in L{trekmail.realm.admin}, shared with
the admin HTTP API.  A refused request prints one line on stderr and
exits 1, leaving the store unchanged; a usage error exits 2.
"""

import argparse
import dataclasses
import datetime
import json
import sys
import time

from trekmail.config import Config, ConfigError, config_path
from trekmail.realm import database, schema
from trekmail.realm.admin import Administration
from trekmail.realm.errors import RealmError


class WallClock:
    def seconds(self):
        return time.time()


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _hidden(value):
    """Password hashes never leave the store through the CLI."""
    if isinstance(value, dict):
        return {k: _hidden(v) for k, v in value.items() if k != "password_hash"}
    if isinstance(value, list):
        return [_hidden(v) for v in value]
    return value


def _read_password(stdin):
    line = stdin.readline()
    return line.rstrip("\r\n")


def _record_lines(record):
    return ["%s: %s" % (k, "" if v is None else v) for k, v in record.items()]


def _print(result, as_json, out):
    plain = _hidden(_plain(result))
    if as_json:
        out.write(json.dumps(plain, indent=2, sort_keys=True) + "\n")
    elif isinstance(plain, list):
        for item in plain:
            out.write(("  ".join(_record_lines(item)) if isinstance(item, dict) else str(item)) + "\n")
    elif isinstance(plain, dict):
        out.write("\n".join(_record_lines(plain)) + "\n")
    elif plain is not None:
        out.write("%s\n" % (plain,))


def _dns_records(admin, args):
    return [{"name": n, "type": t, "value": v} for n, t, v in admin.domain_dns(args.domain)]


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

    domain = nouns.add_parser("domain").add_subparsers(dest="verb", required=True)
    p = domain.add_parser("add")
    p.add_argument("domain")
    p.add_argument("--account", required=True)
    p.set_defaults(run=lambda a, o: a.domain_add(o.domain, o.account))
    p = domain.add_parser("dns")
    p.add_argument("domain")
    p.set_defaults(run=_dns_records)
    p = domain.add_parser("show")
    p.add_argument("domain")
    p.set_defaults(run=lambda a, o: a.domain_get(o.domain))
    p = domain.add_parser("list")
    p.add_argument("--account")
    p.set_defaults(run=lambda a, o: a.domain_list(o.account))

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
    return parser


def main(argv=None, stdin=None, stdout=None, stderr=None, clock=None):
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    options = _parser().parse_args(argv)
    options.stdin = stdin
    try:
        config = Config.from_file(config_path(options.config))
        db = database.connect(config.database_path)
        try:
            database.upgrade(db, schema.SCHEMAS)
            admin = Administration(db, config, clock or WallClock())
            result = options.run(admin, options)
        finally:
            db.close()
    except ConfigError as e:
        stderr.write("trekmail: configuration error: %s\n" % (e,))
        return 78
    except RealmError as e:
        stderr.write("trekmail: %s\n" % (e,))
        return 1
    _print(result, options.json, stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
