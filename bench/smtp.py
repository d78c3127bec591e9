"""
Submission throughput, side by side on this machine: messages/s and the
latency from the end of DATA to the 250, for 20 concurrent sessions
sending 10 KiB messages, a fixed count each run.

Servers (each started fresh for every measurement, in its own temp dir):
- smtp-sink: accepts and discards; the loopback limit of the load tools.
- Postfix (Debian's) smtpd accepting into its own queue, mail held there
  (accept-only); STARTTLS offered, no AUTH (Postfix would need SASL).
- aiosmtpd, minimal, writing and fsyncing one file per message before 250
  (STARTTLS, AUTH PLAIN accepting any password).
- TrekMail: `twistd -n trekmail` on 127.0.0.1, 20 paid accounts with one
  mailbox each; fsync before every 250 (docs/design.md).  Its queue's DNS
  points at a dead port, so nothing is delivered during the run.

Last, TrekMail's memory while a client streams a 1 GiB DATA it refuses.

Loads: Postfix's smtp-source (plain SMTP, a new connection per message,
and with -d) where the server takes plain unauthenticated mail, and
bench/smtpload.py for TLS + AUTH PLAIN (sessions reused, and a new TLS
connection per message).

    .venv/bin/python bench/smtp.py [--count 20000] [--sessions 20] [--runs 3] [--servers trekmail,postfix,...]
"""

import argparse
import json
import shutil
import subprocess
import sys
import time

import benchlib as b
import oversize

SERVERS = ("sink", "postfix", "aiosmtpd", "trekmail")


def smtp_source(port, count, sessions, size, reuse):
    argv = ["smtp-source", "-l", str(size), "-m", str(count), "-s", str(sessions),
            "-f", "a@example.com", "-t", "b@example.net"]
    if reuse:
        argv.append("-d")
    start = time.perf_counter()
    result = subprocess.run(argv + ["127.0.0.1:%d" % port], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    errors = result.stderr.count("\n")
    return {"msgs_per_s": count / elapsed, "errors": errors + (result.returncode != 0)}


def smtpload(port, count, sessions, size, tls, logins=None, reuse=True, sender="a@example.com"):
    argv = [sys.executable, str(b.BENCH / "smtpload.py"), "--port", str(port), "--tls", tls,
            "--count", str(count), "--sessions", str(sessions), "--size", str(size), "--from", sender]
    if logins:
        argv += ["--logins", str(logins)]
    if reuse:
        argv.append("--reuse")
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError("smtpload: " + result.stderr[-2000:])
    return json.loads(result.stdout)


class Measured:
    """Runs a load against a freshly started server and keeps the server's CPU time."""

    def __init__(self, options):
        self.options = options

    def __call__(self, start_server, load):
        with b.Cleanup() as cleanup:
            pids = start_server(cleanup)
            before = b.cpu_seconds(pids())
            load_avg = b.load()
            result = load()
            result["cpu_ms"] = 1000 * (b.cpu_seconds(pids()) - before) / self.options.count
            result["load"] = load_avg
        return result


# ------------------------------------------------------------------ servers


def start_sink(cleanup, port):
    sink = b.SmtpSink(cleanup, port)
    return lambda: [sink.proc.pid]


def start_postfix(cleanup, port, tls):
    base = cleanup.tempdir("postfix")
    postfix = b.Postfix(cleanup, base, port, b.free_port(), hold=True, tls=tls)
    postfix.start()
    master = int((postfix.queue / "pid" / "master.pid").read_text().split()[0])
    return lambda: b.descendants(master)


def start_aiosmtpd(cleanup, port, tls):
    base = cleanup.tempdir("aiosmtpd")
    (base / "spool").mkdir()
    proc = cleanup.spawn(
        [str(b.bench_python()), str(b.BENCH / "aiosmtpd_peer.py"), str(port), str(base / "spool"), *tls],
        stderr=subprocess.DEVNULL,
    )
    b.wait_port(port, proc=proc)
    return lambda: [proc.pid]


class TrekMailRealm:
    """One realm built with the CLI, copied into each server's temp dir (the CLI takes seconds)."""

    def __init__(self, cleanup, accounts):
        self.base = cleanup.tempdir("trekmail-realm")
        config = b.trekmail_config(self.base, {})
        self.logins = b.trekmail_realm(config, accounts)
        (self.base / "logins").write_text("".join("%s %s\n" % login for login in self.logins))

    def instance(self, cleanup, listen, extra=None):
        base = cleanup.tempdir("trekmail")
        shutil.copytree(self.base / "var", base / "var")
        return base, b.trekmail_config(base, listen, extra)


def start_trekmail(cleanup, realm, port, name):
    dead = b.free_port()
    base, config = realm.instance(
        cleanup, {name: "tcp:%d:interface=127.0.0.1" % port},
        {"dns": {"nameservers": "127.0.0.1:%d" % dead}},
    )
    server = b.TrekMail(cleanup, base, config, [port])
    b.profile(cleanup, server.pid)
    return lambda: [server.pid]


# ------------------------------------------------------------------ main


def median_result(results):
    keys = [k for k in results[0] if isinstance(results[0][k], (int, float))]
    merged = {k: b.median([r[k] for r in results if r.get(k) is not None]) for k in keys}
    merged["errors"] = sum(r.get("errors", 0) for r in results)
    merged["load"] = results[-1]["load"]
    samples = [s for r in results for s in r.get("error_samples", [])]
    if samples:
        merged["error_samples"] = samples[:3]
    return merged


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--runs", type=int, default=1, help="runs per figure; the median is printed")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--skip-new-tls", action="store_true", help="skip the new-TLS-connection-per-message load")
    p.add_argument("--skip-oversize", action="store_true", help="skip streaming a refused 1 GiB DATA")
    o = p.parse_args()
    servers = o.servers.split(",")
    b.apt_install("postfix", "openssl")
    measure = Measured(o)
    n, s, size = o.count, o.sessions, o.size

    def runs(start, load):
        return median_result([measure(start, load) for _ in range(o.runs)])

    rows = []
    notes = []
    oversized = None
    with b.Cleanup() as cleanup:
        tls = b.self_signed(cleanup.tempdir("tls"))
        port = b.free_port()
        loads = {}
        if "sink" in servers:
            b.log("smtp-sink")
            start = lambda c: start_sink(c, port)
            loads["sink"] = {
                "source": runs(start, lambda: smtp_source(port, n, s, size, False)),
                "source_d": runs(start, lambda: smtp_source(port, n, s, size, True)),
                "plain": runs(start, lambda: smtpload(port, n, s, size, "none")),
            }
        if "postfix" in servers:
            b.log("postfix")
            start = lambda c: start_postfix(c, port, tls)
            loads["postfix"] = {
                "source": runs(start, lambda: smtp_source(port, n, s, size, False)),
                "source_d": runs(start, lambda: smtp_source(port, n, s, size, True)),
                "plain": runs(start, lambda: smtpload(port, n, s, size, "none")),
                "tls": runs(start, lambda: smtpload(port, n, s, size, "starttls")),
            }
            if not o.skip_new_tls:
                loads["postfix"]["tls_new"] = runs(start, lambda: smtpload(port, n, s, size, "starttls", reuse=False))
        if "aiosmtpd" in servers:
            b.log("aiosmtpd")
            logins = cleanup.tempdir("aiosmtpd-logins") / "logins"
            logins.write_text("".join("user%d@d%d.example.com pw\n" % (i, i) for i in range(s)))
            start = lambda c: start_aiosmtpd(c, port, tls)
            loads["aiosmtpd"] = {
                "source": runs(start, lambda: smtp_source(port, n, s, size, False)),
                "source_d": runs(start, lambda: smtp_source(port, n, s, size, True)),
                "plain": runs(start, lambda: smtpload(port, n, s, size, "none")),
                "tls": runs(start, lambda: smtpload(port, n, s, size, "starttls", logins)),
            }
            if not o.skip_new_tls:
                loads["aiosmtpd"]["tls_new"] = runs(
                    start, lambda: smtpload(port, n, s, size, "starttls", logins, reuse=False))
        if "trekmail" in servers:
            b.log("trekmail: building the realm")
            realm = TrekMailRealm(cleanup, accounts=s)
            logins = realm.base / "logins"
            start = lambda c: start_trekmail(c, realm, port, "submission")
            start_465 = lambda c: start_trekmail(c, realm, port, "submissions")
            try:
                loads["trekmail"] = {"tls": runs(start, lambda: smtpload(port, n, s, size, "starttls", logins))}
                loads["trekmail"]["tls_465"] = runs(
                    start_465, lambda: smtpload(port, n, s, size, "implicit", logins))
                if not o.skip_new_tls:
                    loads["trekmail"]["tls_new"] = runs(
                        start, lambda: smtpload(port, n, s, size, "starttls", logins, reuse=False))
            except RuntimeError as e:
                notes.append("trekmail: %s" % (str(e).strip().splitlines()[-1],))
            if not o.skip_oversize:
                b.log("trekmail: 1 GiB DATA")
                with b.Cleanup() as c:
                    pid = start_465(c)()[0]
                    oversized = oversize.measure("smtp", pid, port, realm.logins[0])

    def cell(server, load, key="msgs_per_s", digits=0):
        r = loads.get(server, {}).get(load)
        if r is None:
            return "—"
        text = b.fmt(r.get(key), digits)
        if key == "msgs_per_s" and r.get("errors"):
            text += " (%d errors)" % r["errors"]
        return text

    names = {"sink": "smtp-sink (discards)", "postfix": "Postfix %s smtpd, into its queue" % b.postfix_version(),
             "aiosmtpd": "aiosmtpd 1.4.6, fsync per message", "trekmail": "TrekMail submission, fsync per 250"}
    for server in servers:
        if server not in loads:
            continue
        tls_key = "tls"
        rows.append([
            names[server], cell(server, "source"), cell(server, "source_d"), cell(server, "plain"),
            cell(server, tls_key), cell(server, tls_key, "p50_ms", 1) + " / " + cell(server, tls_key, "p99_ms", 1),
            cell(server, "tls_new"), cell(server, "tls_465"), cell(server, tls_key, "cpu_ms", 2),
            next(iter(loads[server].values()))["load"].replace("load ", ""),
        ])
    b.table(
        "SMTP submission: %d sessions, %d B messages, %d messages per run, median of %d run(s)" % (s, size, n, o.runs),
        ["server", "smtp-source msg/s", "smtp-source -d msg/s", "smtpload plain -d msg/s",
         "smtpload STARTTLS(+AUTH) -d msg/s", "p50 / p99 ms (end of DATA to 250)", "new TLS conn each msg/s",
         "implicit TLS 465 -d msg/s", "server CPU ms/msg (TLS -d)", "load avg at start"],
        rows,
    )
    if "postfix" in loads and "trekmail" in loads and "tls" in loads["trekmail"]:
        ratio = loads["trekmail"]["tls"]["msgs_per_s"] / loads["postfix"]["source"]["msgs_per_s"]
        ratio_tls = loads["trekmail"]["tls"]["msgs_per_s"] / loads["postfix"]["tls"]["msgs_per_s"]
        print("\nratio TrekMail TLS+AUTH / Postfix plain smtp-source: %.2f; / Postfix STARTTLS (same load tool): %.2f"
              % (ratio, ratio_tls))
    if oversized:
        print("\nTrekMail, a 1 GiB DATA streamed on 465 (limit 25 MB): server RSS %.1f MiB before, peak %.1f MiB "
              "(+%.1f MiB); %.0f MiB streamed in %.0f s; reply: %s" % (
                  oversized["rss_before_mib"], oversized["rss_peak_mib"], oversized["growth_mib"],
                  oversized["streamed_mib"], oversized.get("seconds", 0), oversized["refusal"][:300]))
    for note in notes:
        print("note:", note)
    errors = {k: v.get("error_samples") for srv in loads.values() for k, v in srv.items() if v.get("error_samples")}
    if errors:
        print("error samples:", json.dumps(errors)[:1500])


if __name__ == "__main__":
    main()
