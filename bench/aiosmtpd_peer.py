"""
The aiosmtpd peer: a minimal aiosmtpd server that writes each message to
its own file and fsyncs it before answering 250, optionally with STARTTLS
and AUTH PLAIN (any password) so the TLS+AUTH load generator can drive it.
Runs in the bench venv (aiosmtpd is not a project dependency).

    python bench/aiosmtpd_peer.py PORT SPOOL_DIR [CERT KEY]
"""

import asyncio
import itertools
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult


class FsyncHandler:
    def __init__(self, spool):
        self.spool = spool
        self.serial = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(self.spool, "%d.eml" % next(self.serial))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, envelope.original_content)
            os.fsync(fd)
        finally:
            os.close(fd)
        return "250 2.0.0 Ok: queued"


def accept_any(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)


def main():
    port, spool = int(sys.argv[1]), sys.argv[2]
    tls = None
    if len(sys.argv) > 3:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[3], sys.argv[4])
    handler = FsyncHandler(spool)
    loop = asyncio.new_event_loop()
    factory = lambda: SMTP(
        handler, hostname="aiosmtpd.bench", tls_context=tls, require_starttls=False,
        authenticator=accept_any if tls else None, auth_require_tls=True, data_size_limit=26214400,
    )
    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", port, backlog=256))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
