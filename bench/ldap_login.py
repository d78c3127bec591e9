"""
Logins per second through the LDAP realm's checker (Portal level, no
protocol), against a real slapd loaded with the sample directory, for
each C{[realm] ldap_auth} mode, with 20 logins in flight.  "cold" runs
with C{refresh_seconds = 0} (every login asks slapd for the mailbox,
domain and account); "warm" with the default 60, the steady state.

    .venv/bin/python bench/ldap_login.py [LOGINS]
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.cred.credentials import UsernamePassword  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from tests.slapd import SAMPLE_PASSWORDS, Slapd, ldap_config  # noqa: E402
from trekmail import settings  # noqa: E402
from trekmail.realm import database, ldapdirectory, schema  # noqa: E402

ADDRESS = "ssha@example.com"
IN_FLIGHT = 20


@defer.inlineCallbacks
def measure(checker, logins):
    credentials = UsernamePassword(ADDRESS.encode(), SAMPLE_PASSWORDS[ADDRESS].encode())
    yield checker.requestAvatarId(credentials)
    remaining = [logins]

    @defer.inlineCallbacks
    def worker():
        while remaining[0] > 0:
            remaining[0] -= 1
            yield checker.requestAvatarId(credentials)

    started = time.perf_counter()
    yield defer.gatherResults([worker() for _ in range(IN_FLIGHT)])
    return logins / (time.perf_counter() - started)


@defer.inlineCallbacks
def main(reactor, logins):
    work = tempfile.mkdtemp(prefix="trekmail-ldap-bench-")
    slapd = Slapd(os.path.join(work, "slapd")).start()
    try:
        print("| ldap_auth | cache | logins/s |")
        print("|---|---|---|")
        for mode in ("bind", "compare"):
            for cache, refresh in (("cold", "0"), ("warm", "60")):
                data_dir = os.path.join(work, mode + cache)
                config = ldap_config(slapd, data_dir, ldap_auth=mode, refresh_seconds=refresh)
                db = database.connect(config.database_path)
                database.upgrade(db, schema.SCHEMAS)
                threaded = database.ThreadedDatabase(db, reactor)
                threaded.start()
                directory, checker = ldapdirectory.build(settings.realm(config), reactor=reactor, database=threaded,
                                                         refresh_seconds=config.get("realm", "refresh_seconds"), hashing=None)
                directory.start()
                rate = yield measure(checker, logins)
                print("| %s | %s | %.0f |" % (mode, cache, rate))
                directory.stop()
                threaded.stop()
    finally:
        slapd.remove()
        shutil.rmtree(work)


if __name__ == "__main__":
    task.react(main, [int(sys.argv[1]) if len(sys.argv) > 1 else 2000])
