"""
The server's configuration: one INI file, every key declared here.

Declaring each key with its default and parser lets a typo in an
operator's file stop start-up with a line that names it, instead of being
ignored until the feature it meant to tune misbehaves in production.
"""

import configparser
import ipaddress
import os
from dataclasses import dataclass
from typing import Callable

DEFAULT_CONFIG_PATH = "etc/trekmail.ini"


class ConfigError(Exception):
    """
    A configuration problem, phrased for the operator: C{str()} is the one
    line printed when start-up or the CLI refuses the file.
    """

    def __init__(self, section, key, problem):
        self.section = section
        self.key = key
        self.problem = problem
        where = "[%s]" % (section,) if key is None else "[%s] %s" % (section, key)
        super().__init__("%s: %s" % (where, problem))


def _text(value):
    return value.strip()


def _integer(value):
    return int(value.strip())


def _usable_cores():
    """The cores this process may run on (a container or CPU pinning may allow fewer than the host has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _positive(value):
    number = int(value.strip())
    if number < 1:
        raise ValueError("expected a number above 0, not %r" % (value.strip(),))
    return number


def _processes(value):
    value = value.strip()
    count = min(_usable_cores(), 64) if value == "auto" else int(value)
    if not 1 <= count <= 64:
        raise ValueError("expected auto or 1 to 64, not %r" % (value,))
    return count


def _boolean(value):
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("expected yes or no, not %r" % (value,))


def _words(value):
    return tuple(value.split())


def _choice(*allowed):
    def parse(value):
        value = value.strip()
        if value not in allowed:
            raise ValueError("expected one of %s, not %r" % (", ".join(allowed), value))
        return value

    return parse


def _nameservers(value):
    """C{127.0.0.1:5353 [::1]:53} -> ((host, port), ...)"""
    servers = []
    for word in value.split():
        if word.startswith("["):
            host, _, port = word[1:].partition("]:")
        else:
            host, _, port = word.rpartition(":") if ":" in word else (word, "", "53")
        servers.append((host, int(port or 53)))
    return tuple(servers)


def _zone(value):
    """Empty, or a DNS zone such as C{dkim.provider.example} (C{[dkim] cname_zone})."""
    value = value.strip().lower().rstrip(".")
    labels = value.split(".")
    if value and (len(value) > 200 or len(labels) < 2 or not all(
            0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii() for label in labels)):
        raise ValueError("expected a DNS zone such as dkim.provider.example, not %r" % (value,))
    return value


def _source_pools(value):
    """C{warm:ADDR ADDR; new:ADDR} -> {"warm": (ADDR, ADDR), "new": (ADDR,)}"""
    pools = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        name, sep, addresses = part.partition(":")
        if not sep:
            raise ValueError("expected POOL:ADDRESS ..., not %r" % (part.strip(),))
        pools[name.strip()] = tuple(addresses.split())
    return pools


def _networks(value):
    """C{127.0.0.0/8 10.1.2.0/24} -> (IPv4Network, ...); a bare address is its own /32 or /128."""
    return tuple(ipaddress.ip_network(word, strict=False) for word in value.replace(",", " ").split())


def _address(value):
    """Empty, or one C{local@domain} (checked against the directory when used)."""
    value = value.strip().lower()
    local, at, domain = value.rpartition("@")
    if value and (not at or not local or "." not in domain or any(c.isspace() for c in value)):
        raise ValueError("expected an address such as ops@provider.example, not %r" % (value,))
    return value


def _delimiters(value):
    """Subaddress delimiter characters (docs/addressing.md): any but letters, digits, dot, C{@} and spaces."""
    value = value.strip()
    if any(c.isalnum() or c in ".@\"" or c.isspace() or not c.isascii() for c in value) or len(value) > 8:
        raise ValueError("expected up to 8 delimiter characters such as + or -, or nothing to turn it off")
    return value


def _seconds_list(value):
    """C{300 600 3600} -> (300, 600, 3600): the queue's retry intervals."""
    seconds = tuple(int(word) for word in value.split())
    if not seconds or min(seconds) <= 0:
        raise ValueError("expected one or more positive numbers of seconds, not %r" % (value,))
    return seconds


@dataclass(frozen=True)
class Key:
    default: str
    parse: Callable = _text


SCHEMA = {
    "server": {
        "hostname": Key("localhost"),
        "data_dir": Key("var"),
    },
    "listen": {
        "submissions": Key(""),
        "submission": Key(""),
        "mx": Key(""),
        "imaps": Key(""),
        "imap": Key(""),
        "https": Key(""),
        "admin": Key(""),
        "metrics": Key(""),
        "http": Key(""),
    },
    "tls": {
        "certificate": Key("var/tls/cert.pem"),
        "private_key": Key("var/tls/key.pem"),
        "sni_directory": Key(""),
    },
    "acme": {
        "directory_url": Key(""),
        "email": Key("", _address),
        "domains": Key("", _words),
        "renew_before_days": Key("30", _positive),
        "ca_file": Key(""),
    },
    "dns": {
        "nameservers": Key("", _nameservers),
        "spf_include": Key("spf.example.net"),
        "dmarc_record": Key("v=DMARC1; p=quarantine; adkim=r; aspf=r"),
    },
    "dkim": {
        "overlap_days": Key("7", _positive),
        "check_interval": Key("3600", _positive),
        "cname_zone": Key("", _zone),
        "ed25519": Key("no", _boolean),
    },
    "relay": {
        "mx_port": Key("25", _integer),
        "source_pools": Key("", _source_pools),
    },
    "queue": {
        "retry_intervals": Key("300 600 1200 2400 3600", _seconds_list),
        "max_age": Key("432000", _integer),
        "suppress_after": Key("3", _integer),
        "concurrency": Key("100", _integer),
        "connections_per_destination": Key("4", _integer),
    },
    "secrets": {
        "key_file": Key(""),
    },
    "smarthost": {
        "ca_file": Key(""),
        "timeout": Key("60", _integer),
    },
    "mx": {
        "max_connections": Key("1000", _positive),
        "max_connections_per_ip": Key("20", _positive),
        "postmaster": Key("", _address),
        "recipient_delimiter": Key("+", _delimiters),
        "dmarc_reject": Key("yes", _boolean),
    },
    "submission": {
        "max_connections": Key("1000", _positive),
        "max_connections_per_ip": Key("20", _positive),
    },
    "admin": {
        "token": Key(""),
        "token_file": Key(""),
        "max_connections": Key("100", _positive),
        "max_connections_per_ip": Key("100", _positive),
    },
    "metrics": {
        "max_connections": Key("100", _positive),
        "max_connections_per_ip": Key("100", _positive),
    },
    "dav": {
        "threads": Key("10", _integer),
        "max_body": Key("26214400", _integer),
        "max_connections": Key("1000", _positive),
        "max_connections_per_ip": Key("50", _positive),
    },
    "imap": {
        "append_limit": Key("52428800", _integer),
        "max_connections": Key("25000", _integer),
        "max_unauthenticated_per_ip": Key("20", _integer),
        "trusted_networks": Key("", _networks),
        "message_cache": Key("33554432", _integer),
        "processes": Key("1", _processes),
    },
    "auth": {
        "hash_threads": Key("2", _integer),
        "max_logins_in_progress_per_ip": Key("10", _positive),
        "max_logins_in_progress": Key("64", _positive),
    },
    "realm": {
        "backend": Key("sqlite", _choice("sqlite", "ldap")),
        "database": Key(""),
        "password_scrypt_n": Key("131072", _integer),
        "refresh_seconds": Key("60", _integer),
        "deleted_mail_retention_days": Key("30", _positive),
        "ldap_url": Key("ldap://127.0.0.1:389", _words),
        "bind_dn": Key(""),
        "bind_password_file": Key(""),
        "base_dn": Key(""),
        "ldap_mailbox_base": Key(""),
        "ldap_domain_base": Key(""),
        "ldap_account_base": Key(""),
        "ldap_mailbox_filter": Key("(&(objectClass=trekmailMailbox)(mail=%s))"),
        "ldap_domain_filter": Key("(&(objectClass=trekmailDomain)(associatedDomain=%s))"),
        "ldap_account_filter": Key("(&(objectClass=trekmailAccount)(trekmailAccountId=%s))"),
        "ldap_attributes": Key(""),
        "ldap_auth": Key("bind", _choice("bind", "compare")),
        "ldap_timeout": Key("5", _integer),
        "ldap_pool_size": Key("4", _integer),
        "ldap_ca_file": Key(""),
    },
}

LISTENERS = tuple(SCHEMA["listen"])


class Config:
    """
    Parsed and validated settings. C{config.get("relay", "mx_port")}
    returns the parsed value; every lookup names a declared key.
    """

    def __init__(self, values, path=None):
        self._values = values
        self.path = path

    def get(self, section, key):
        return self._values[section][key]

    def section(self, name):
        return dict(self._values[name])

    @property
    def data_dir(self):
        return self.get("server", "data_dir")

    def data_path(self, *parts):
        return os.path.join(self.data_dir, *parts)

    @property
    def secret_key_path(self):
        return self.get("secrets", "key_file") or self.data_path("secrets", "profile.key")

    @property
    def database_path(self):
        return self.get("realm", "database") or self.data_path("trekmail.sqlite")

    @classmethod
    def from_text(cls, text, path=None):
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str
        try:
            parser.read_string(text, source=path or "<config>")
        except configparser.Error as e:
            raise ConfigError("file", None, _first_line(e)) from None
        return cls(_validate(parser), path)

    @classmethod
    def from_file(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError("file", None, "cannot read %s: %s" % (path, e.strerror)) from None
        return cls.from_text(text, path)

    @classmethod
    def defaults(cls):
        return cls.from_text("")


def _first_line(error):
    return str(error).strip().splitlines()[0]


def _validate(parser):
    for section in parser.sections():
        if section not in SCHEMA:
            raise ConfigError(section, None, "unknown section")
        for key in parser[section]:
            if key not in SCHEMA[section]:
                raise ConfigError(section, key, "unknown key")
    values = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key, spec in keys.items():
            raw = parser.get(section, key, fallback=spec.default)
            try:
                values[section][key] = spec.parse(raw)
            except ValueError as e:
                raise ConfigError(section, key, str(e)) from None
    return values


def config_path(explicit=None):
    return explicit or os.environ.get("TREKMAIL_CONFIG") or DEFAULT_CONFIG_PATH
