"""
imaptest's scripted protocol suite (the C{src/tests/} directory of the
source the imaptest binary was built from) against Dovecot and TrekMail
in the same run, plain IMAP on loopback: the counts of passed, failed and
skipped tests imaptest prints for each.

    IMAPTEST=/path/to/imaptest .venv/bin/python bench/imaptest_suite.py \\
        [--tests /path/to/imaptest/src/tests] [--servers dovecot,trekmail]

C{--tests} defaults to C{src/tests} two directories above the binary (an
in-tree build).

imaptest does not count the groups it skips for a capability the server
lacks (its skip path in C{test-exec.c} never reaches the step that counts
them: its "skipped due to missing capabilities" stays 0), so this script
counts them itself, from each test's C{capabilities:} header and the
server's CAPABILITY after login, and leaves them out of the passes.
"""

import argparse
import imaplib
import os
import re
import subprocess
import sys

import benchlib as b
from imap import IMAPTEST_HELP, PASSWORD, Dovecot, TrekMailImap

TOTALS = re.compile(r"(\d+) test groups: (\d+) failed, (\d+) skipped due to missing capabilities")
DOVECOT_LIBS = "/usr/lib/dovecot"


def required_capabilities(tests):
    """{test name: the capabilities its header asks for}, read as imaptest's test-parser.c reads them."""
    out = {}
    for name in sorted(os.listdir(tests)):
        path = os.path.join(tests, name)
        if name.endswith(".mbox") or not os.path.isfile(path):
            continue
        wanted = set()
        with open(path, "rb") as f:
            for line in f:
                line = line.decode("utf-8", "replace").strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                if key.strip().lower() == "capabilities":
                    wanted = {c.upper() for c in value.split()}
        out[name] = wanted
    return out


def server_capabilities(port, user):
    client = imaplib.IMAP4("127.0.0.1", port)
    try:
        client.login(user, PASSWORD)
        return {c.upper() for c in client.capability()[1][0].decode().split()}
    finally:
        client.logout()


def run_suite(imaptest, tests, port, user):
    argv = [imaptest, "host=127.0.0.1", "port=%d" % port, "user=%s" % user, "user2=%s" % user,
            "pass=%s" % PASSWORD, "test=%s" % tests]
    # Built against Debian's dovecot-dev, imaptest links libdovecot.so from Dovecot's private directory.
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(filter(None, [os.environ.get("LD_LIBRARY_PATH"), DOVECOT_LIBS])))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    out = result.stdout + result.stderr
    found = TOTALS.search(out)
    if found is None:
        raise RuntimeError("imaptest printed no totals (exit status %d):\n%s" % (result.returncode, out[-1500:]))
    groups, failed, _ = (int(n) for n in found.groups())
    failures = sorted(set(re.findall(r"\*\*\* Test (\S+) (?:command|initialization)", out)))
    have = server_capabilities(port, user)
    skipped = sorted(name for name, wanted in required_capabilities(tests).items()
                     if not wanted <= have and name not in failures)
    return {"groups": groups, "failed": failed, "skipped": len(skipped), "passed": groups - failed - len(skipped),
            "failures": failures, "skips": skipped, "output": out,
            "command": " ".join(argv[:3] + ["user=...", "test=%s" % tests])}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--imaptest", default=os.environ.get("IMAPTEST"))
    p.add_argument("--tests")
    p.add_argument("--servers", default="dovecot,trekmail")
    p.add_argument("--keep", help="directory to write each server's full imaptest output into")
    o = p.parse_args()
    if not (o.imaptest and os.access(o.imaptest, os.X_OK)):
        sys.exit(IMAPTEST_HELP)
    tests = o.tests or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(o.imaptest))), "src", "tests")
    b.apt_install("dovecot-imapd")
    results = {}
    with b.Cleanup() as cleanup:
        for server in o.servers.split(","):
            b.log(server, "imaptest scripted suite")
            with b.Cleanup() as c:
                port = b.free_port()
                if server == "dovecot":
                    Dovecot(c, port, None)
                    user = "suite@example.com"
                else:
                    realm_base = cleanup.tempdir("trekmail-realm")
                    b.trekmail_realm(b.trekmail_config(realm_base, {}), 1, password=PASSWORD)
                    TrekMailImap(c, realm_base, port, tls=False)
                    user = "user0@d0.example.com"
                results[server] = run_suite(o.imaptest, tests, port, user)
            if o.keep:
                with open(os.path.join(o.keep, server + ".out"), "w") as f:
                    f.write(results[server]["output"])
    for server, r in results.items():
        print("%-9s %d groups: %d passed, %d failed, %d skipped  failed: %s" % (
            server, r["groups"], r["passed"], r["failed"], r["skipped"], " ".join(r["failures"]) or "-"))
        print("          skipped: %s" % (" ".join(r["skips"]) or "-"))
        print("          %s" % r["command"])


if __name__ == "__main__":
    main()
