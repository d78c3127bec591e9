"""
The CLI verbs that move mail and data in and out: C{import imap|maildir|mbox}
(L{trekmail.admin.importer}), C{backup} and C{restore}
(L{trekmail.admin.backup}).  The wiring's part: it reads the Config and
hands the modules plain values.
"""

import sqlite3
import time

from trekmail.admin import backup, importer
from trekmail.config import Config, config_path
from trekmail.realm import store
from trekmail.realm.errors import RealmError


def _host_port(text):
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or "]" in port:
        return text.strip("[]"), 143
    return host.strip("[]"), int(port)


def _import(make_source):
    def run(admin, options):
        store.mailbox_get(admin.db, options.mailbox.lower())
        password = options.stdin.readline().rstrip("\r\n") if getattr(options, "password_stdin", False) else None
        try:
            source = make_source(options, password)
            return importer.run(source, admin.config.data_dir, options.mailbox.lower(), time.time,
                                admin.config.get("imap", "append_limit"))
        except (OSError, ValueError, sqlite3.Error) as e:
            raise RealmError("import stopped: %s (what was copied stays; run it again to go on)" % (e,)) from None
    return run


def _imap_source(options, password):
    from trekmail.admin.importimap import IMAPSource

    host, port = _host_port(options.source)
    return IMAPSource(host, port, options.user, password, insecure=options.insecure)


def _file_source(kind):
    def make(options, password):
        from trekmail.admin import importfiles

        return (importfiles.MaildirSource if kind == "maildir" else importfiles.MboxSource)(options.path)
    return make


def add_commands(nouns):
    imports = nouns.add_parser("import", help="copy a mailbox in, with folders, flags and dates; resumable").add_subparsers(
        dest="verb", required=True)
    p = imports.add_parser("imap", help="from another IMAP server (TLS: 993 implicit, else STARTTLS)")
    p.add_argument("--from", dest="source", required=True, metavar="HOST[:PORT]")
    p.add_argument("--user", required=True)
    p.add_argument("--password-stdin", action="store_true", required=True)
    p.add_argument("--insecure", action="store_true", help="allow a server without STARTTLS (the password goes in clear)")
    p.add_argument("--mailbox", required=True, metavar="ADDRESS")
    p.set_defaults(run=_import(_imap_source))
    for kind in ("maildir", "mbox"):
        p = imports.add_parser(kind, help="from a %s on disk" % (kind,))
        p.add_argument("path")
        p.add_argument("--mailbox", required=True, metavar="ADDRESS")
        p.set_defaults(run=_import(_file_source(kind)))

    p = nouns.add_parser("backup", help="a consistent copy of the database, keys and mail, while the server runs")
    p.add_argument("dir")
    p.set_defaults(standalone=lambda o: backup.backup(_layout(o), o.dir))
    p = nouns.add_parser("restore", help="a backup into an empty data directory (the server stopped)")
    p.add_argument("dir")
    p.add_argument("--force", action="store_true", help="even into a data directory that is not empty")
    p.set_defaults(standalone=lambda o: backup.restore(_layout(o), o.dir, force=o.force))


def _layout(options):
    """
    Where the configured server keeps what a backup copies.  Read without
    opening the database: C{restore} must find the data directory empty.
    """
    config = Config.from_file(config_path(options.config))
    return backup.Layout(
        data_dir=config.data_dir,
        database=config.database_path,
        keys={
            "secret_key": config.secret_key_path,
            "admin_token": config.get("admin", "token_file") or config.data_path("admin.token"),
            "tls_certificate": config.get("tls", "certificate"),
            "tls_private_key": config.get("tls", "private_key"),
        },
    )
