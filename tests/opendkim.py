"""
OpenDKIM's C{opendkim-testmsg} (Debian's C{opendkim-tools}) as an
independent DKIM verifier, asking the test's own DNS server for keys.

libopendkim resolves through the C library, which reads only
/etc/resolv.conf and takes no port: the test's zone is also served on
port 53 of an address of its own in 127.0.0.0/8 (binding port 53 needs
root, as C{bin/test} runs), and the verifier runs in a mount namespace
of its own (C{unshare -m}) where a resolv.conf naming that address is
bound over /etc/resolv.conf, so nothing outside the test sees it.
"""

import os
import random
import subprocess

from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.names import dns, server

TESTMSG = "/usr/sbin/opendkim-testmsg"


def serve_on_port_53(testcase, zone):
    """Serve C{zone} on port 53 of a random loopback address; returns a resolv.conf path naming it."""
    if os.geteuid() != 0:
        raise AssertionError("opendkim-testmsg reads /etc/resolv.conf, so its DNS server must bind port 53: run as root")
    factory = server.DNSServerFactory(authorities=[zone])
    for _ in range(50):
        address = "127.%d.%d.53" % (random.randrange(1, 255), random.randrange(0, 255))
        try:
            udp = reactor.listenUDP(53, dns.DNSDatagramProtocol(controller=factory), interface=address)
        except CannotListenError:
            continue
        testcase.addCleanup(udp.stopListening)
        tcp = reactor.listenTCP(53, factory, interface=address)
        testcase.addCleanup(tcp.stopListening)
        path = os.path.abspath(testcase.mktemp())
        with open(path, "w") as f:
            f.write("nameserver %s\noptions timeout:10 attempts:1\n" % (address,))
        return path
    raise AssertionError("no loopback address free on port 53")


def verify(message, resolv_conf):
    """
    C{(ok, stderr)}: does C{opendkim-testmsg} verify C{message} (one
    DKIM-Signature), asking the server of C{resolv_conf}?  Blocking: call
    it in a thread, the DNS server answers on the reactor.
    """
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$1"', resolv_conf, TESTMSG],
        input=message, capture_output=True, timeout=60)
    return done.returncode == 0 and not done.stdout, done.stderr.decode("utf-8", "replace")
