"""
End-to-end relay: messages submitted until the last one has been
accepted by an smtp-sink (Debian's postfix package) acting as the remote
MX; messages/s from the first connection to the last message at the sink.

- Postfix (Debian's), relayhost = the sink, loaded by smtp-source -d
  (plain SMTP, as Postfix's own load tools run) and by bench/smtpload.py with STARTTLS.
- TrekMail: submission on 587 (STARTTLS + AUTH PLAIN, 20 paid accounts),
  managed route, DKIM-signed, resolving example.net through bench/dnsd.py
  (every name is 127.0.0.1, MX mx.<name>) and delivering to the sink on
  [relay] mx_port.

    .venv/bin/python bench/relay.py [--count 20000] [--sessions 20] [--runs 3]
"""

import argparse
import sys
import threading
import time

import benchlib as b
import smtp as submission


def timed_relay(sink, count, submit, timeout):
    """Run C{submit()} and wait for C{count} messages at the sink; (result, msgs/s end to end)."""
    start = time.monotonic()
    result = {}

    def run():
        result.update(submit())

    thread = threading.Thread(target=run)
    thread.start()
    done = sink.wait_for(count, timeout)
    thread.join()
    result["submit_seconds"] = result.get("seconds")
    if done is None:
        result["end_to_end"] = None
        result["arrived"] = sink.messages
    else:
        result["end_to_end"] = count / (done - start)
        result["arrived"] = count
    return result


def postfix_run(options, load):
    with b.Cleanup() as cleanup:
        sink = b.SmtpSink(cleanup, b.free_port())
        port = b.free_port()
        tls = b.self_signed(cleanup.tempdir("tls")) if load == "starttls" else None
        postfix = b.Postfix(cleanup, cleanup.tempdir("postfix"), port, sink.port, tls=tls)
        postfix.start()
        load_avg = b.load()
        if load == "source":
            submit = lambda: submission.smtp_source(port, options.count, options.sessions, options.size, True)
        else:
            submit = lambda: submission.smtpload(port, options.count, options.sessions, options.size, "starttls")
        result = timed_relay(sink, options.count, submit, options.timeout)
        result["load"] = load_avg
        return result


def trekmail_run(options, realm):
    with b.Cleanup() as cleanup:
        sink = b.SmtpSink(cleanup, b.free_port())
        dns_port = b.free_port()
        dnsd = cleanup.spawn([str(b.PROJECT_PYTHON), str(b.BENCH / "dnsd.py"), str(dns_port)])
        time.sleep(1.0)
        if dnsd.poll() is not None:
            raise RuntimeError("dnsd did not start")
        port = b.free_port()
        base, config = realm.instance(
            cleanup, {"submission": "tcp:%d:interface=127.0.0.1" % port},
            {"dns": {"nameservers": "127.0.0.1:%d" % dns_port}, "relay": {"mx_port": str(sink.port)}},
        )
        server = b.TrekMail(cleanup, base, config, [port])
        b.profile(cleanup, server.pid)
        load_avg = b.load()
        cpu = b.cpu_seconds([server.pid])
        result = timed_relay(
            sink, options.count,
            lambda: submission.smtpload(port, options.count, options.sessions, options.size, "starttls",
                                        realm.base / "logins"),
            options.timeout,
        )
        result["cpu_ms"] = 1000 * (b.cpu_seconds([server.pid]) - cpu) / options.count
        result["load"] = load_avg
        if result["end_to_end"] is None:
            result["log_tail"] = server.log_path.read_text()[-1500:]
        return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the last message at the sink")
    p.add_argument("--servers", default="postfix,trekmail")
    o = p.parse_args()
    b.apt_install("postfix", "openssl")
    servers = o.servers.split(",")
    results = {}
    if "postfix" in servers:
        for load in ("source", "starttls"):
            b.log("postfix", load)
            results["postfix " + load] = [postfix_run(o, load) for _ in range(o.runs)]
    if "trekmail" in servers:
        with b.Cleanup() as cleanup:
            b.log("trekmail: building the realm")
            realm = submission.TrekMailRealm(cleanup, accounts=o.sessions)
            try:
                results["trekmail"] = [trekmail_run(o, realm) for _ in range(o.runs)]
            except RuntimeError as e:
                print("note: trekmail:", str(e).strip().splitlines()[-1])

    names = {
        "postfix source": "Postfix %s -> smtp-sink, smtp-source -d (plain)" % b.postfix_version(),
        "postfix starttls": "Postfix %s -> smtp-sink, smtpload STARTTLS -d" % b.postfix_version(),
        "trekmail": "TrekMail 587 STARTTLS+AUTH -> DKIM -> smtp-sink",
    }
    rows = []
    medians = {}
    for key, runs in results.items():
        e2e = [r["end_to_end"] for r in runs if r["end_to_end"]]
        medians[key] = b.median(e2e) if len(e2e) == len(runs) else None
        rows.append([
            names[key], b.fmt(medians[key]) if medians[key] else "incomplete (%d arrived)" % min(r["arrived"] for r in runs),
            b.fmt(b.median([r["msgs_per_s"] for r in runs])),
            sum(r.get("errors", 0) for r in runs),
            b.fmt(b.median([r["cpu_ms"] for r in runs]), 2) if "cpu_ms" in runs[0] else "—",
            runs[-1]["load"].replace("load ", ""),
        ])
    b.table(
        "Relay end to end: %d sessions, %d B messages, %d messages, median of %d run(s)"
        % (o.sessions, o.size, o.count, o.runs),
        ["path", "end-to-end msg/s (to last at sink)", "submission msg/s", "submit errors",
         "server CPU ms/msg", "load avg at start"],
        rows,
    )
    if medians.get("trekmail") and medians.get("postfix source"):
        print("\nratio TrekMail / Postfix (smtp-source -d): %.2f; / Postfix (same STARTTLS load): %.2f" % (
            medians["trekmail"] / medians["postfix source"],
            medians["trekmail"] / medians["postfix starttls"] if medians.get("postfix starttls") else float("nan")))
    for runs in results.values():
        for r in runs:
            if r.get("log_tail"):
                print("trekmail log tail:\n" + r["log_tail"])
                break


if __name__ == "__main__":
    sys.exit(main())
