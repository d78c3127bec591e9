"""
One of the other IMAP processes of C{[imap] processes}, run by
L{trekmail.imapprocesses} as C{python -m trekmail.imapchild CONFIG INDEX}:
it serves IMAP on the connections the first process places with it over
the socketpair on L{LINK_DESCRIPTOR}, logs JSON events to stdout for the
first process to merge, and ends when told to stop or when that link
closes.

A module of its own because it builds its services with the wiring
(L{trekmail.service}), which imports L{trekmail.imapprocesses}: were the
entry point there, the two would import each other.
"""

import os
import signal
import socket
import sys

from twisted.internet import protocol
from twisted.logger import globalLogBeginner, jsonFileLogObserver

from trekmail.config import Config
from trekmail.imapprocesses import LINK_DESCRIPTOR
from trekmail.service import imap_process_service


def main(argv):
    """C{python -m trekmail.imapchild CONFIG INDEX}"""
    from twisted.internet import reactor

    # A reload or re-check asked for while this process is still building
    # has nothing to do (it reads the certificates as it builds, and has no
    # session yet); its services take SIGHUP and SIGUSR2 over once started.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    path, index = argv[0], int(argv[1])
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=False)

    def orphaned():
        if reactor.running:
            reactor.stop()

    top, member = imap_process_service(Config.from_file(path), reactor, index, orphaned)
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.adoptStreamConnection(LINK_DESCRIPTOR, socket.AF_UNIX, protocol.Factory.forProtocol(member.link))
    os.close(LINK_DESCRIPTOR)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
