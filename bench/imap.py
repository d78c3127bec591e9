"""
IMAP, side by side with Dovecot (Debian's dovecot-imapd, Maildir, plain
IMAP on 127.0.0.1, static passdb), on the same mail:

Each server runs over implicit TLS (993-style) and over plain IMAP:
Dovecot plain as bench/README.md sets it up, TrekMail plain with loopback in
[imap] trusted_networks (Dovecot also lets local clients log in without
TLS), so plain compares with plain and TLS with TLS.

1. imaptest, 20 clients, 20 s, mbox = 1,000 generated messages of
   1-20 KiB, in its default profile and with logout=0: operations/s and
   errors.  Each client logs in as one of 100 users (imaptest's
   user=...%d, users=100), the method of bench/README.md: with a single user all 20
   clients contend for one mailbox, which halves Dovecot's logout=0
   figure (4.3k against 8.7k ops/s here).  imaptest is not packaged: pass the path of an imaptest binary
   as IMAPTEST=/path/to/imaptest or --imaptest (see bench/README.md).
2. Latency of SELECT, FETCH 1:* (FLAGS) and UID SEARCH on a 10,000-message
   INBOX (filled by APPEND through the server itself).
3. TrekMail's memory while a client streams a 1 GiB APPEND it refuses.
4. Idle capacity: N connections (LOGIN, SELECT, IDLE) held at once, and
   memory (PSS) per connection above the idle server's own.

    IMAPTEST=/path/to/imaptest .venv/bin/python bench/imap.py \\
        [--parts imaptest,latency,idle] [--idle 10000] [--dovecot-idle 5000] [--servers dovecot,trekmail]
"""

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time

import benchlib as b
import oversize

PASSWORD = "bench-password-1"
IMAPTEST_HELP = "imaptest not found: pass IMAPTEST=/path/to/imaptest or --imaptest (see bench/README.md)"


def make_mbox(path, count=1000, seed=8):
    """1,000 messages of 1-20 KiB, the same every run."""
    rng = random.Random(seed)
    words = ("mail server benchmark twisted dovecot imap fetch search store append flags "
             "mailbox header body quoted printable the a of and to in is it").split()
    with open(path, "w") as f:
        for n in range(count):
            size = rng.randint(1024, 20 * 1024)
            f.write("From sender%d@example.org Sat Nov 21 08:00:00 2026\n" % (n % 50))
            f.write("From: Sender %d <sender%d@example.org>\nTo: <user0@d0.example.com>\n" % (n % 50, n % 50))
            f.write("Subject: bench message %d %s\nDate: Sat, 21 Nov 2026 08:%02d:00 +0000\n" % (n, rng.choice(words), n % 60))
            f.write("Message-ID: <%d.bench@example.org>\nMIME-Version: 1.0\n" % n)
            f.write("Content-Type: text/plain; charset=us-ascii\n\n")
            written = 0
            while written < size:
                line = " ".join(rng.choice(words) for _ in range(12)) + "\n"
                if line.startswith("From "):
                    line = ">" + line
                f.write(line)
                written += len(line)
            f.write("\n")


def raise_nofile():
    """Soft open-files limit up to the hard one (20,000 here: no process can hold more)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- servers


class Dovecot:
    """
    A private Dovecot.  C{tls}: (cert, key) for implicit TLS, or C{None}
    for plain IMAP (the set-up of Dovecot's own published figures).  C{performance}: imap-login in
    "high-performance mode" (service_count = 0, each login process serving
    many clients), which Dovecot's docs recommend for busy servers; the
    Debian default starts one login process per connection, and with TLS
    that process stays as the connection's TLS proxy.
    """

    def __init__(self, cleanup, port, tls, performance=False, max_connections=30000):
        self.tls = tls is not None
        base = self.base = cleanup.tempdir("dovecot")
        for d in ("run", "mail", "home"):
            (base / d).mkdir()
        shutil.chown(base / "mail", "nobody", "nogroup")
        shutil.chown(base / "home", "nobody", "nogroup")
        conf = base / "dovecot.conf"
        conf.write_text("""\
base_dir = {base}/run
state_dir = {base}/run
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{base}/mail/%u
first_valid_uid = 1
default_process_limit = {limit}
default_client_limit = {limit}
default_vsz_limit = 0
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={base}/home/%u
}}
service imap-login {{
  inet_listener {listener} {{
    address = 127.0.0.1
    port = {port}
    ssl = {listener_ssl}
  }}
{login_mode}
}}
service imap {{
  process_limit = {limit}
}}
service anvil {{
  client_limit = {anvil}
}}
service auth {{
  client_limit = {anvil}
}}
protocol imap {{
  mail_max_userip_connections = {limit}
}}
""".format(base=base, port=port, password=PASSWORD, limit=max_connections, anvil=max_connections + 1000,
           ssl="ssl = required\nssl_cert = <%s\nssl_key = <%s" % tls if tls else "ssl = no",
           listener="imaps" if tls else "imap", listener_ssl="yes" if tls else "no",
           login_mode="  service_count = 0\n  process_min_avail = 2\n  client_limit = %d" % max_connections
           if performance else ""))
        self.proc = cleanup.spawn(["dovecot", "-F", "-c", str(conf)], preexec_fn=raise_nofile,
                                  stderr=open(base / "dovecot.stderr", "w"))
        b.wait_port(port, proc=self.proc)
        self.port = port

    def version(self):
        return subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.split()[0]

    def pids(self):
        return b.descendants(self.proc.pid)


class TrekMailImap:
    """
    Over implicit TLS, or (C{tls=False}) plain IMAP with loopback as a
    trusted network, which is how Dovecot treats local clients: the
    like-for-like peer of Dovecot's plain figures.
    """

    def __init__(self, cleanup, realm_base, port, tls=True, processes="auto"):
        base = cleanup.tempdir("trekmail")
        shutil.copytree(realm_base / "var", base / "var")
        # the idle test opens 100 connections at once from one address,
        # where an operator's 10,000 clients would come from many
        imap = {"max_unauthenticated_per_ip": "1000", "processes": processes}
        if not tls:
            imap["trusted_networks"] = "127.0.0.0/8"
        config = b.trekmail_config(base, {"imaps" if tls else "imap": "tcp:%d:interface=127.0.0.1:backlog=1024" % port},
                                   {"imap": imap})
        self.server = b.TrekMail(cleanup, base, config, [port], preexec_fn=raise_nofile)
        b.profile(cleanup, self.server.pid)
        self.port = port
        self.tls = tls

    def pids(self):
        return b.descendants(self.server.pid)


# ---------------------------------------------------------------- parts


def run_imaptest(imaptest, port, tls, mbox, logout, clients, secs, users):
    argv = [imaptest, "host=127.0.0.1", "port=%d" % port, "user=user0@d%d.example.com", "users=%d" % users,
            "pass=%s" % PASSWORD, "mbox=%s" % mbox, "seed=1", "clients=%d" % clients, "secs=%d" % secs]
    if tls:
        argv.append("ssl=any-cert")
    if not logout:
        argv.append("logout=0")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 120)
    out = result.stdout + result.stderr
    # the last "Totals:" block: a header of command names, percentages, then counts
    totals = out.rsplit("Totals:", 1)[-1].splitlines() if "Totals:" in out else []
    counts = {}
    lines = [l.split() for l in totals if l.strip()]
    if lines:
        names = lines[0]
        for values in lines[1:]:
            if len(values) == len(names) and all(v.isdigit() for v in values):
                counts = dict(zip(names, map(int, values)))
    errors = [l for l in out.splitlines() if l.startswith(("Error:", "Panic:", "Fatal:"))]
    if not counts:
        raise RuntimeError("imaptest printed no totals (exit status %d):\n%s" % (result.returncode, out[-1500:]))
    return {
        "ops_per_s": sum(counts.values()) / secs if counts else None,
        "counts": counts,
        "errors": len(errors),
        "error_samples": sorted(set(re.sub(r"\d+", "N", e) for e in errors))[:6],
    }


def client(*args, stdin=None):
    result = subprocess.run([sys.executable, str(b.BENCH / "imapclient.py"), *args],
                            capture_output=True, text=True, input=stdin)
    if result.returncode:
        raise RuntimeError("imapclient %s: %s" % (args[0], result.stderr[-1500:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_idle(port, tls, logins, count, pids, per_client=8000):
    """
    Hold C{count} idle connections from several client processes (a
    process can have 20,000 descriptors at most here), then read the
    server's PSS.
    """
    before = b.pss_kib(pids())
    procs = []
    start = time.monotonic()
    for offset in range(0, count, per_client):
        procs.append(subprocess.Popen(
            [sys.executable, str(b.BENCH / "imapclient.py"), "idle", "--port", str(port), "--logins", str(logins),
             "--count", str(min(per_client, count - offset)), "--offset", str(offset)] + (["--tls"] if tls else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile,
        ))
    try:
        reports = [json.loads(proc.stdout.readline()) for proc in procs]
        elapsed = time.monotonic() - start
        time.sleep(3)
        after = b.pss_kib(pids())
        report = {
            "held": sum(r["held"] for r in reports), "failed": sum(r["failed"] for r in reports),
            "failure_samples": sorted({f for r in reports for f in r["failure_samples"]})[:5],
            "pss_before_kib": before, "pss_after_kib": after,
        }
        report["per_second"] = report["held"] / elapsed
        report["kib_per_connection"] = (after - before) / report["held"] if report["held"] else None
        for proc in procs:
            proc.stdin.close()
        report["still_open_at_end"] = sum(
            json.loads(proc.stdout.readline() or '{"still_open_at_end": 0}')["still_open_at_end"] for proc in procs)
    finally:
        for proc in procs:
            b.stop_process(proc)
    return report


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--imaptest", default=os.environ.get("IMAPTEST", shutil.which("imaptest")))
    p.add_argument("--servers", default="dovecot,dovecot-perf,dovecot-plain,trekmail,trekmail-plain")
    p.add_argument("--parts", default="imaptest,latency,oversize,idle")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--processes", default="auto", help="TrekMail's [imap] processes")
    p.add_argument("--users", type=int, default=100, help="imaptest users the clients pick from")
    p.add_argument("--secs", type=int, default=20)
    p.add_argument("--profiles", default="default,logout0", help="imaptest profiles to run: default, logout0")
    p.add_argument("--big", type=int, default=10000, help="messages in the latency mailbox")
    p.add_argument("--idle", type=int, default=10000, help="idle connections held against TrekMail")
    p.add_argument("--dovecot-idle", type=int, default=2000,
                   help="idle connections held against Dovecot (one ~0.5 MiB process each)")
    o = p.parse_args()
    parts = o.parts.split(",")
    servers = o.servers.split(",")
    if "imaptest" in parts and not (o.imaptest and os.access(o.imaptest, os.X_OK)):
        sys.exit(IMAPTEST_HELP)
    b.apt_install("dovecot-imapd")
    results = {}
    with b.Cleanup() as cleanup:
        work = cleanup.tempdir("imap")
        mbox = work / "bench.mbox"
        make_mbox(mbox)
        # imaptest's %d runs from 1 to users: accounts d0 .. d<users>
        idle_accounts = max(o.users + 1, -(-max(o.idle, o.dovecot_idle) // 100))
        logins = work / "logins"
        logins.write_text("".join("user0@d%d.example.com %s\n" % (n, PASSWORD) for n in range(idle_accounts)))
        realm_base = None
        if any(server.startswith("trekmail") for server in servers):
            realm_base = cleanup.tempdir("trekmail-realm")
            config = b.trekmail_config(realm_base, {})
            b.log("trekmail: building the realm (%d accounts)" % idle_accounts)
            b.trekmail_realm(config, idle_accounts, mailboxes_each=2, password=PASSWORD)

        tls = b.self_signed(cleanup.tempdir("tls"))

        def start(server, c, port):
            if server.startswith("dovecot"):
                return Dovecot(c, port, None if server == "dovecot-plain" else tls, performance=server == "dovecot-perf")
            return TrekMailImap(c, realm_base, port, tls=server != "trekmail-plain", processes=o.processes)

        for server in servers:
            r = results[server] = {}
            if "imaptest" in parts:
                for logout in [profile == "default" for profile in o.profiles.split(",")]:
                    b.log(server, "imaptest", "default" if logout else "logout=0")
                    with b.Cleanup() as c:
                        port = b.free_port()
                        s = start(server, c, port)
                        load_avg = b.load()
                        cpu = b.cpu_seconds(s.pids())
                        res = run_imaptest(o.imaptest, port, s.tls, mbox, logout, o.clients, o.secs, o.users)
                        res["cpu_s"] = b.cpu_seconds(s.pids()) - cpu
                        res["load"] = load_avg
                        r["default" if logout else "logout0"] = res
            if "latency" in parts:
                b.log(server, "latency: appending", o.big)
                with b.Cleanup() as c:
                    port = b.free_port()
                    s = start(server, c, port)
                    user = ["--port", str(port), "--user", "user1@d0.example.com", "--password", PASSWORD]
                    user += ["--tls"] if s.tls else []
                    r["append"] = client("append", *user, "--mbox", str(mbox), "--count", str(o.big))
                    r["latency"] = client("latency", *user)
                    r["latency"]["load"] = b.load()
            if "oversize" in parts and server == "trekmail":
                b.log(server, "1 GiB APPEND")
                with b.Cleanup() as c:
                    port = b.free_port()
                    s = start(server, c, port)
                    r["oversize"] = oversize.measure("imap", s.pids()[0], port, ("user1@d1.example.com", PASSWORD))
            if "idle" in parts:
                count = o.idle if server.startswith("trekmail") else o.dovecot_idle
                if server == "dovecot" and count * 2 > 5000:
                    b.log("dovecot idle skipped: two processes (~2 MiB) per TLS connection; see dovecot-perf")
                    continue
                b.log(server, "idle:", count)
                with b.Cleanup() as c:
                    port = b.free_port()
                    s = start(server, c, port)
                    time.sleep(2)
                    r["idle"] = measure_idle(port, s.tls, logins, count, s.pids)
                    r["idle"]["load"] = b.load()

    dovecot = "Dovecot %s" % Dovecot.version(None)
    version = {"dovecot": dovecot + " TLS, Debian's login mode", "dovecot-perf": dovecot + " TLS, login performance mode",
               "dovecot-plain": dovecot + " plain IMAP", "trekmail": "TrekMail TLS",
               "trekmail-plain": "TrekMail plain IMAP (loopback trusted)"}
    if "imaptest" in parts:
        rows = []
        for server, r in results.items():
            for profile in ("default", "logout0"):
                res = r.get(profile)
                if res:
                    top = sorted(res["counts"].items(), key=lambda kv: -kv[1])[:6]
                    rows.append([version[server], "default" if profile == "default" else "logout=0",
                                 b.fmt(res["ops_per_s"]), res["errors"],
                                 ", ".join("%s %s" % (k, b.fmt(v / o.secs)) for k, v in top),
                                 b.fmt(res["cpu_s"] / o.secs * 100) + " %", res["load"].replace("load ", "")])
        b.table("imaptest: %d clients, %d s, mbox of 1,000 messages 1-20 KiB" % (o.clients, o.secs),
                ["server", "profile", "ops/s", "errors", "ops/s by command (top 6)", "server CPU", "load avg at start"],
                rows)
        pairs = [("trekmail", peer) for peer in ("dovecot", "dovecot-perf")] + [("trekmail-plain", "dovecot-plain")]
        for profile in ("default", "logout0"):
            for ours, peer in pairs:
                t = results.get(ours, {}).get(profile)
                d = results.get(peer, {}).get(profile)
                if d and t and d["ops_per_s"] and t["ops_per_s"]:
                    print("ratio %s / %s, %s: %.2f" % (version[ours], version[peer], profile,
                                                       t["ops_per_s"] / d["ops_per_s"]))
        for server, r in results.items():
            for profile in ("default", "logout0"):
                if r.get(profile, {}).get("error_samples"):
                    print("%s %s error samples: %s" % (server, profile, r[profile]["error_samples"]))
    if "latency" in parts:
        rows = []
        for server, r in results.items():
            lat = r.get("latency")
            if not lat:
                continue
            for name, v in lat.items():
                if name != "load":
                    rows.append([version[server], name, b.fmt(v["median_ms"], 1), b.fmt(v["max_ms"], 1),
                                 b.fmt(v["bytes"])])
            rows.append([version[server], "(APPEND to fill, 4 connections)",
                         "%s msg/s" % b.fmt(r["append"]["per_second"]), "", lat["load"].replace("load ", "")])
        b.table("IMAP latency on a %d-message INBOX (ms, over 5 tries)" % o.big,
                ["server", "command", "median ms", "max ms", "response bytes"], rows)
    over = results.get("trekmail", {}).get("oversize")
    if over:
        print("\nTrekMail, a 1 GiB APPEND literal (limit [imap] append_limit): server RSS %.1f MiB before, peak %.1f MiB "
              "(+%.1f MiB); %.0f MiB streamed in %.0f s; reply: %s" % (
                  over["rss_before_mib"], over["rss_peak_mib"], over["growth_mib"], over["streamed_mib"],
                  over.get("seconds", 0), over["refusal"][:300]))
    if "idle" in parts:
        rows = []
        for server, r in results.items():
            i = r.get("idle")
            if i:
                rows.append([version[server], b.fmt(i["held"]), i["failed"], b.fmt(i["per_second"]),
                             b.fmt(i["pss_before_kib"] / 1024, 1), b.fmt(i["pss_after_kib"] / 1024, 1),
                             b.fmt(i["kib_per_connection"], 1), i.get("still_open_at_end", "—"),
                             i["load"].replace("load ", "")])
        b.table("IMAP idle capacity: LOGIN, SELECT INBOX, IDLE, then hold",
                ["server", "held", "failed", "opened/s", "PSS before MiB", "PSS held MiB", "KiB per connection",
                 "still open at end", "load avg"], rows)
        for server, r in results.items():
            if r.get("idle", {}).get("failure_samples"):
                print("%s idle failures: %s" % (server, r["idle"]["failure_samples"]))


if __name__ == "__main__":
    main()
