"""
A real OpenLDAP slapd for tests: its own cn=config and database in a
temporary directory, listening on 127.0.0.1 only, loaded with the
shipped schema and an LDIF (by default the shipped sample directory).

Tests stop, restart, freeze and thaw it to exercise outages; the same
port is kept across restarts so that clients can reconnect.  The server
is started offline-loaded (slapadd), so a test pays about a tenth of a
second for a fresh directory.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

from twisted.internet import reactor
from twisted.internet.task import Clock

from tests.server_process import free_port
from trekmail.realm import database, schema
from trekmail.realm.ldapclient import LdapClient
from trekmail.realm.ldapdirectory import LdapDirectory
from trekmail import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_LDIF = os.path.join(ROOT, "etc", "ldap", "trekmail-schema.ldif")
SAMPLE_LDIF = os.path.join(ROOT, "etc", "ldap", "example-directory.ldif")
SYSTEM_SCHEMAS = "/etc/ldap/schema"
MODULE_PATH = "/usr/lib/ldap"

SUFFIX = "dc=example,dc=net"
ROOT_DN = "cn=admin,dc=example,dc=net"
ROOT_PASSWORD = "admin-secret"
SERVICE_DN = "cn=trekmail,ou=services,dc=example,dc=net"
SERVICE_PASSWORD = "service-secret"

SAMPLE_PASSWORDS = {
    "ssha@example.com": "ssha-Secret-1",
    "ssha512@example.com": "ssha512-Secret-2",
    "sha512crypt@example.com": "sha512crypt-Secret-3",
    "yescrypt@example.com": "yescrypt-Secret-4",
    "argon2@example.com": "argon2-Secret-5",
    "paused@example.com": "paused-Secret-6",
    "carol@example.org": "carol-Secret-7",
}
"""The sample directory's mailboxes and passwords, one per scheme."""

_CONFIG = """\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {directory}/slapd.pid
{tls}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {modules}
olcModuleLoad: back_mdb
olcModuleLoad: pw-sha2
olcModuleLoad: argon2

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://{schemas}/core.ldif

include: file://{schemas}/cosine.ldif

include: file://{schemas}/inetorgperson.ldif

include: file://{trekmail_schema}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {directory}/data
olcSuffix: {suffix}
olcRootDN: {root_dn}
olcRootPW: {root_password}
olcDbMaxSize: 67108864
olcDbIndex: objectClass eq
olcDbIndex: mail eq
olcDbIndex: associatedDomain eq
olcDbIndex: trekmailAccountId eq
olcAccess: to attrs=userPassword by dn.exact="{service_dn}" read by anonymous auth by * none
olcAccess: to * by dn.exact="{service_dn}" read by * none
"""


class SlapdError(Exception):
    pass




class Slapd:
    """
    C{Slapd(directory).start()}; C{url} then names it.  Call C{stop()} in
    cleanup (C{testCase.addCleanup(slapd.stop)}); it is safe to call twice.
    """

    def __init__(self, directory, ldif=SAMPLE_LDIF, tls=False):
        self.directory = os.path.abspath(directory)
        self.ldif = ldif
        self.tls = tls
        self.port = None
        self.tls_port = None
        self.process = None
        self._log = None

    @property
    def url(self):
        return "ldap://127.0.0.1:%d" % (self.port,)

    @property
    def tls_url(self):
        """With C{tls=True}: implicit TLS, a self-signed certificate for 127.0.0.1 (C{ca_file})."""
        return "ldaps://127.0.0.1:%d" % (self.tls_port,)

    @property
    def ca_file(self):
        return os.path.join(self.directory, "cert.pem")

    def _tls_config(self):
        if not self.tls:
            return ""
        from trekmail.tls import self_signed

        certificate, key = self_signed("localhost")
        key_file = os.path.join(self.directory, "key.pem")
        for path, data in ((self.ca_file, certificate), (key_file, key)):
            with open(path, "wb") as f:
                f.write(data)
        return "olcTLSCertificateFile: %s\nolcTLSCertificateKeyFile: %s\n" % (self.ca_file, key_file)

    def _configure(self):
        config_dir = os.path.join(self.directory, "slapd.d")
        os.makedirs(config_dir)
        os.makedirs(os.path.join(self.directory, "data"))
        tls = self._tls_config()
        config_ldif = os.path.join(self.directory, "config.ldif")
        with open(config_ldif, "w") as f:
            f.write(
                _CONFIG.format(
                    directory=self.directory,
                    tls=tls,
                    modules=MODULE_PATH,
                    schemas=SYSTEM_SCHEMAS,
                    trekmail_schema=SCHEMA_LDIF,
                    suffix=SUFFIX,
                    root_dn=ROOT_DN,
                    root_password=ROOT_PASSWORD,
                    service_dn=SERVICE_DN,
                )
            )
        self._run("slapadd", "-n0", "-F", config_dir, "-l", config_ldif)
        self._run("slapadd", "-q", "-n1", "-F", config_dir, "-l", self.ldif)

    def _run(self, *command):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SlapdError("%s failed: %s" % (" ".join(command), result.stderr.strip()))

    def start(self, timeout=10):
        """Configure on first use, then start and wait until it accepts connections."""
        if not os.path.isdir(os.path.join(self.directory, "slapd.d")):
            self._configure()
        attempts = 5 if self.port is None else 1
        for _ in range(attempts):
            if self.port is None or attempts > 1:
                self.port = free_port()
                self.tls_port = free_port() if self.tls else None
            if self._launch(timeout):
                return self
        raise SlapdError("slapd did not start; its log: %s" % (self._read_log(),))

    def _launch(self, timeout):
        self._log = open(os.path.join(self.directory, "slapd.log"), "ab")
        urls = "ldap://127.0.0.1:%d/" % (self.port,)
        if self.tls:
            urls += " ldaps://127.0.0.1:%d/" % (self.tls_port,)
        self.process = subprocess.Popen(
            [
                "slapd", "-d", "0",
                "-h", urls,
                "-F", os.path.join(self.directory, "slapd.d"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._close_log()
                self.process = None
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def _read_log(self):
        with open(os.path.join(self.directory, "slapd.log"), "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self):
        """Stop the server and wait for it; the port stays reserved for C{start()}."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self._close_log()

    def restart(self):
        self.stop()
        return self.start()

    def freeze(self):
        """SIGSTOP: the port still accepts connections but nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)

    def connect(self):
        """A blocking ldap3 connection bound as the root DN, for a test to change entries."""
        import ldap3

        return ldap3.Connection(
            ldap3.Server(self.url, get_info=ldap3.NONE),
            ROOT_DN,
            ROOT_PASSWORD,
            auto_bind=True,
            raise_exceptions=True,
        )

    def modify(self, dn, **attributes):
        """Replace attributes of one entry: C{modify(dn, trekmailPlan=["pro"])}; [] deletes."""
        import ldap3

        with self.connect() as connection:
            connection.modify(
                dn, {name: [(ldap3.MODIFY_REPLACE, values)] for name, values in attributes.items()}
            )

    def remove(self):
        """Stop, then delete the temporary directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def ldap_config(slapd, data_dir, **realm):
    """
    A L{trekmail.config.Config} with the LDAP realm pointed at C{slapd}
    as the sample directory's service account; C{realm} adds or
    overrides C{[realm]} keys.
    """
    from trekmail.config import Config

    return Config.from_text(ldap_config_text(slapd, data_dir, **realm))


def ldap_config_text(slapd, data_dir, **realm):
    """The text of L{ldap_config}, for a file the CLI or twistd reads."""
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    password_file = os.path.join(data_dir, "ldap-password")
    with open(password_file, "w") as f:
        f.write(SERVICE_PASSWORD + "\n")
    keys = {
        "backend": "ldap",
        "database": os.path.join(data_dir, "trekmail.sqlite"),
        "password_scrypt_n": "1024",
        "ldap_url": slapd.url,
        "bind_dn": SERVICE_DN,
        "bind_password_file": password_file,
        "base_dn": SUFFIX,
        "ldap_timeout": "1",
    }
    keys.update(realm)
    lines = ["[server]", "data_dir = %s" % (data_dir,), "[realm]"]
    lines += ["%s = %s" % item for item in keys.items()]
    return "\n".join(lines) + "\n"


def started_directory(testcase, config, data_dir, clock=None):
    """
    An L{LdapDirectory} over C{config} with its local database thread,
    both started and stopped when C{testcase} ends.
    """
    db = database.connect(config.database_path)
    database.upgrade(db, schema.SCHEMAS)
    threaded = database.ThreadedDatabase(db, reactor)
    threaded.start()
    testcase.addCleanup(threaded.stop)
    ldap = settings.ldap(config)
    directory = LdapDirectory(
        settings=ldap,
        client=LdapClient(ldap, reactor),
        database=threaded,
        reactor=reactor,
        clock=clock or Clock(),
        data_dir=data_dir,
        refresh_seconds=60,
    )
    directory.start()
    testcase.addCleanup(directory.stop)
    return directory
