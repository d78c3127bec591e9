"""
What every benchmark script shares: installing and starting the peers
(Postfix, smtp-sink, Dovecot, aiosmtpd) and our own server as real
processes on 127.0.0.1, and printing one table.

Each peer lives in a temporary directory of its own, with its own config
and spool, so a run never touches the machine's system mail setup and
leaves nothing behind.  Spools are reset by moving them aside, never by
deleting them between runs (deleting a 20,000-file spool slows the next
half minute of create + fsync by about 45 %).
"""

import atexit
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PROJECT_PYTHON = Path(os.environ.get("TREKMAIL_PYTHON", ROOT / ".venv" / "bin" / "python"))
BENCH_VENV = Path(os.environ.get("TREKMAIL_BENCH_VENV", Path.home() / ".cache" / "trekmail-bench" / "venv"))
BENCH_PIP = ("aiosmtpd==1.4.6", "py-spy")


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- installs


def missing_debs(packages):
    missing = []
    for package in packages:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        ).stdout
        if "install ok installed" not in status:
            missing.append(package)
    return missing


def apt_install(*packages):
    """
    Install Debian packages that are not there yet.  Postfix is preseeded
    to "No configuration" so the package creates no system instance on
    port 25: every Postfix here runs from its own config directory.
    """
    missing = missing_debs(packages)
    if not missing:
        return
    log("installing", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if "postfix" in missing:
        subprocess.run(
            ["debconf-set-selections"], input="postfix postfix/main_mailer_type select No configuration\n",
            text=True, check=True,
        )
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )


def bench_python():
    """
    A venv of its own for tools that are not project dependencies
    (aiosmtpd, py-spy), kept under ~/.cache so reruns skip the install.
    """
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        log("creating", BENCH_VENV)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    have = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True).stdout.lower()
    wanted = [p for p in BENCH_PIP if p.split("==")[0].lower() + "==" not in have]
    if wanted:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    return python


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listening on 127.0.0.1:%d after %ss" % (port, timeout))


class Cleanup:
    """A stack of undo steps, run in reverse on exit, even after an error or ^C."""

    def __init__(self):
        self.steps = []

    def __enter__(self):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return self

    def push(self, fn, *args):
        self.steps.append((fn, args))

    def spawn(self, argv, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.push(stop_process, proc)
        return proc

    def tempdir(self, prefix):
        path = Path(tempfile.mkdtemp(prefix="trekmail-bench-" + prefix + "-"))
        path.chmod(0o755)
        if not os.environ.get("BENCH_KEEP"):
            # At exit, not when this measurement ends: on ext4 without a journal (this machine's), new files
            # skip over inodes freed in the last minutes, so a deleted spool slows the next server's creates.
            atexit.register(shutil.rmtree, path, True)
        return path

    def __exit__(self, *exc):
        while self.steps:
            fn, args = self.steps.pop()
            try:
                fn(*args)
            except Exception as e:  # cleanup goes on whatever one step did
                log("cleanup:", fn.__name__, e)


def stop_process(proc, timeout=10):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cpu_seconds(pids):
    """User + system CPU seconds of these processes and their reaped children."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick
    return total


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path("/proc/%d/smaps_rollup" % pid).read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def descendants(pid):
    """pid and every process below it."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


# ---------------------------------------------------------------- peers


POSTFIX_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_version():
    return subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True
    ).stdout.strip()


class Postfix:
    """
    A private Postfix: its own config_directory and queue_directory under
    C{base}, smtpd on 127.0.0.1:C{port} only, relaying everything to
    C{relayhost} (an smtp-sink).  With C{hold}, smtpd accepts into the
    queue and the mail stays there (the accept-only figure).
    """

    def __init__(self, cleanup, base, port, relay_port, hold=False, tls=None):
        self.config = base / "etc"
        self.queue = base / "spool"
        self.data = base / "data"
        for d in (self.config, self.queue, self.data):
            d.mkdir(parents=True)
        shutil.chown(self.data, "postfix")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "myhostname": "bench.localdomain",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": "[127.0.0.1]:%d" % relay_port,
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtpd_client_restrictions": "check_client_access static:HOLD" if hold else "",
            "message_size_limit": "26214400",
        }
        if os.environ.get("BENCH_DEBUG"):
            # without it Postfix logs to a syslog that is not there: nothing
            main.update(maillog_file=str(base / "maillog"), maillog_file_prefixes=str(base))
        if tls:
            main.update(smtpd_tls_cert_file=tls[0], smtpd_tls_key_file=tls[1], smtpd_tls_security_level="may")
        (self.config / "main.cf").write_text("".join("%s = %s\n" % kv for kv in main.items()))
        (self.config / "master.cf").write_text(
            "127.0.0.1:%d inet n - n - - smtpd\n" % port + POSTFIX_SERVICES
        )
        self.port = port
        self.cleanup = cleanup

    def postfix(self, *args):
        subprocess.run(["postfix", "-c", str(self.config), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        self.postfix("start")
        self.cleanup.push(self.stop)
        wait_port(self.port)

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.config), "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # postfix stop returns before every daemon has exited
        for _ in range(100):
            pid_file = self.queue / "pid" / "master.pid"
            if not pid_file.exists():
                return
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
            except (ProcessLookupError, ValueError):
                return
            time.sleep(0.1)

    def queued(self):
        count = 0
        for sub in ("hold", "incoming", "active", "deferred", "maildrop"):
            for _, _, files in os.walk(self.queue / sub):
                count += len(files)
        return count


class SmtpSink:
    """
    Postfix's smtp-sink: accepts and discards.  Its running counter
    ("sess=N quit=N mesg=N" after every message) is read on a thread, so
    L{wait_for} can tell when the last message has arrived.
    """

    def __init__(self, cleanup, port, backlog=256):
        self.port = port
        self.messages = 0
        self.changed = threading.Condition()
        self.proc = cleanup.spawn(
            ["smtp-sink", "-c", "-u", "postfix", "127.0.0.1:%d" % port, str(backlog)],
            stdout=subprocess.PIPE,
        )
        threading.Thread(target=self._count, daemon=True).start()
        wait_port(port, proc=self.proc)

    def _count(self):
        pending = b""
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            *records, pending = (pending + chunk).split(b"\r")
            for record in reversed(records):
                _, found, count = record.rpartition(b"mesg=")
                if found:
                    with self.changed:
                        self.messages = int(count.split()[0])
                        self.changed.notify_all()
                    break

    def wait_for(self, count, timeout):
        """The monotonic time when C{count} messages had arrived, or C{None} on timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.messages < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)
        return time.monotonic()


# ---------------------------------------------------------------- our server


def trekmail_config(base, listen, extra=None):
    sections = {
        "server": {"hostname": "bench.localdomain", "data_dir": str(base / "var")},
        "listen": {name: "" for name in ("submissions", "submission", "mx", "imaps", "imap", "https", "admin")},
        "realm": {"password_scrypt_n": "1024"},
        # Every load tool connects from 127.0.0.1: lift the per-address caps, as Postfix exempts
        # $mynetworks from its anvil limits.
        "submission": {"max_connections_per_ip": "100000", "max_connections": "100000"},
        "mx": {"max_connections_per_ip": "100000", "max_connections": "100000"},
        "auth": {"max_logins_in_progress_per_ip": "1000", "max_logins_in_progress": "1000"},
    }
    sections["listen"].update(listen)
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    text = "".join(
        "[%s]\n%s\n" % (s, "".join("%s = %s\n" % kv for kv in values.items())) for s, values in sections.items()
    )
    path = base / "trekmail.ini"
    path.write_text(text)
    return path


def trekmail_realm(config, accounts, mailboxes_each=1, password="bench-password-1", plan="agency"):
    """
    Accounts, one domain each, and mailboxes, as the bench needs them: paid,
    verified, registered and with domains created long ago, so no trial
    limit, grace period or warm-up interferes.  Returns [(address, password)].
    """
    result = subprocess.run(
        [str(PROJECT_PYTHON), "-c", _REALM_SCRIPT, str(config), str(accounts), str(mailboxes_each), plan],
        input=password + "\n", capture_output=True, text=True, cwd=ROOT,
    )
    if result.returncode:
        raise RuntimeError("realm set-up failed: " + result.stderr[-2000:])
    return [("user%d@d%d.example.com" % (m, n), password) for n in range(accounts) for m in range(mailboxes_each)]


# The CLI's own entry point, called in one process for every account: a
# process per command would take minutes for the 100 accounts of the idle test.
_REALM_SCRIPT = """
import io, json, sys
from trekmail import cli
config, accounts, each, plan = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
password = sys.stdin.readline()
def run(*argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    if cli.main(["--config", config, "--json", *argv], stdin=io.StringIO(stdin), stdout=out, stderr=err):
        sys.exit("trekmail %s: %s" % (" ".join(argv), err.getvalue()))
    return json.loads(out.getvalue()) if out.getvalue().strip() else None
for n in range(accounts):
    account = str(run("account", "add", "owner%d@owner.example" % n, "--plan", plan, "--verified",
                      "--registered", "2025-01-01")["id"])
    run("account", "set", account, "--paid")
    run("domain", "add", "d%d.example.com" % n, "--account", account)
    for m in range(each):
        run("mailbox", "add", "user%d@d%d.example.com" % (m, n), "--password-stdin", stdin=password)
# Established domains, past the 7-day warm-up (40 % of the caps on days
# 1-3), which no CLI command can backdate.
import sqlite3
from trekmail.config import Config
db = sqlite3.connect(Config.from_file(config).database_path)
with db:
    db.execute("UPDATE domains SET created = created - 30 * 86400")
db.close()
"""


class TrekMail:
    """C{twistd -n trekmail --config FILE}, a real process, as an operator starts it."""

    def __init__(self, cleanup, base, config, ports, **popen):
        self.log_path = base / "twistd.log"
        self.proc = cleanup.spawn(
            [str(PROJECT_PYTHON.parent / "twistd"), "-n", "--pidfile=", "--logfile", str(self.log_path),
             "trekmail", "--config", str(config)],
            cwd=ROOT, **popen,
        )
        try:
            for port in ports:
                wait_port(port, timeout=60, proc=self.proc)
        except RuntimeError:
            log(self.log_path.read_text()[-3000:] if self.log_path.exists() else "(no log)")
            raise

    @property
    def pid(self):
        return self.proc.pid


def profile(cleanup, pid):
    """
    With BENCH_PROFILE=FILE set, py-spy samples C{pid} (the thread holding
    the GIL only, so the profile is CPU, not threads waiting) until the
    measurement ends.  FILE.svg gets a flame graph, FILE.json a speedscope
    profile, anything else collapsed stacks.  A later measurement in the
    same run overwrites the file: pick one with each script's options.
    """
    out = os.environ.get("BENCH_PROFILE")
    if not out:
        return
    form = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(out).suffix, "raw")
    spy = cleanup.spawn(
        [str(bench_python().parent / "py-spy"), "record", "--gil", "--rate", "250", "--format", form,
         "--output", out, "--pid", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def finish():
        os.kill(spy.pid, signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            pass

    cleanup.push(finish)


def self_signed(base):
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench.localdomain",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


# ---------------------------------------------------------------- output


def trekmail_ready(*packages):
    """True when trekmail/<package> has code beyond an empty __init__."""
    for package in packages:
        files = [p for p in (ROOT / "trekmail" / package).glob("*.py") if p.stat().st_size > 0]
        if not files:
            return False
    return True


def machine():
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return "%s, %d cores, %d GiB, Linux %s, Python %s" % (
        cpu, os.cpu_count(), mem, platform.release(), platform.python_version())


def load():
    return "load %.2f %.2f %.2f" % os.getloadavg()


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def table(title, headers, rows):
    print()
    print("### " + title)
    print(machine() + "; " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print()
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()


def fmt(value, digits=0):
    if value is None or value != value:
        return "—"
    return "{:,.{}f}".format(value, digits)
