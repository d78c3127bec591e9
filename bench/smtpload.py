"""
An SMTP load generator for what Postfix's smtp-source cannot do: TLS
(STARTTLS or implicit) and AUTH PLAIN, with the latency of each message
from the end of DATA to the server's reply.

N sessions run concurrently until a fixed number of messages has been
sent.  Each message is built once per session (its From is the session's
login, as a submission server demands) and sent with MAIL/RCPT/DATA
pipelined when the server offers PIPELINING.  Prints one JSON object.

    python bench/smtpload.py --port 10587 --tls starttls --logins FILE \\
        --to b@example.net --sessions 20 --count 20000 [--reuse]

FILE has one "address password" per line; session i logs in as line
i mod n.  Without --logins there is no AUTH and --from is the sender.
"""

import argparse
import asyncio
import base64
import json
import ssl
import sys
import time


class ReplyError(Exception):
    def __init__(self, code, text):
        super().__init__("%s %s" % (code, text))
        self.code = code


def message_bytes(sender, recipient, size, serial):
    header = (
        "From: <%s>\r\nTo: <%s>\r\nSubject: bench message %d\r\n"
        "Date: Sat, 21 Nov 2026 08:00:00 +0000\r\nMessage-ID: <%d.%s>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        % (sender, recipient, serial, serial, sender)
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = bytearray()
    while len(header) + len(body) + len(line) <= size:
        body += line
    body += b"x" * max(0, size - len(header) - len(body) - 2) + b"\r\n"
    return header + bytes(body) + b".\r\n"


class Session:
    def __init__(self, options, login, tls_context):
        self.options = options
        self.login = login
        self.tls_context = tls_context
        self.reader = self.writer = None
        self.pipelining = False
        self.sender = login[0] if login else options.sender
        self.serial = 0

    async def reply(self):
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ReplyError(0, "connection closed")
            lines.append(line)
            if line[3:4] != b"-":
                break
        code = int(lines[0][:3])
        return code, lines

    async def expect(self, ok=(2,)):
        code, lines = await self.reply()
        if code // 100 not in ok:
            raise ReplyError(code, lines[-1].decode(errors="replace").strip())
        return lines

    async def command(self, line, ok=(2,)):
        self.writer.write(line + b"\r\n")
        return await self.expect(ok)

    async def ehlo(self):
        lines = await self.command(b"EHLO load.bench.localdomain")
        self.pipelining = any(l[4:].upper().startswith(b"PIPELINING") for l in lines)

    async def connect(self):
        o = self.options
        implicit = self.tls_context if o.tls == "implicit" else None
        self.reader, self.writer = await asyncio.open_connection(
            o.host, o.port, ssl=implicit, server_hostname=o.host if implicit else None, limit=1 << 20
        )
        await self.expect()
        await self.ehlo()
        if o.tls == "starttls":
            await self.command(b"STARTTLS")
            await self.writer.start_tls(self.tls_context, server_hostname=o.host)
            await self.ehlo()
        if self.login:
            token = base64.b64encode(b"\0" + self.login[0].encode() + b"\0" + self.login[1].encode())
            await self.command(b"AUTH PLAIN " + token)

    async def close(self, polite=True):
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            if polite:
                writer.write(b"QUIT\r\n")
                await self.expect()
            writer.close()
            await writer.wait_closed()
        except (OSError, ReplyError, ssl.SSLError):
            pass

    async def send(self, stats):
        """One message; returns the seconds from the end of DATA to the reply."""
        o = self.options
        self.serial += 1
        data = message_bytes(self.sender, o.to, o.size, self.serial)
        mail = b"MAIL FROM:<%s> SIZE=%d" % (self.sender.encode(), len(data))
        rcpt = b"RCPT TO:<%s>" % o.to.encode()
        if self.pipelining:
            self.writer.write(mail + b"\r\n" + rcpt + b"\r\nDATA\r\n")
            errors = []
            for ok in ((2,), (2,), (3,)):
                code, lines = await self.reply()
                if code // 100 not in ok:
                    errors.append(ReplyError(code, lines[-1].decode(errors="replace").strip()))
            if errors:
                if code // 100 == 3:
                    self.writer.write(b".\r\n")
                    await self.reply()
                await self.command(b"RSET")
                raise errors[0]
        else:
            await self.command(mail)
            await self.command(rcpt)
            await self.command(b"DATA", ok=(3,))
        self.writer.write(data)
        start = time.perf_counter()
        await self.expect()
        return time.perf_counter() - start


async def worker(options, login, tls_context, budget, stats):
    session = Session(options, login, tls_context)
    while budget[0] > 0:
        budget[0] -= 1
        try:
            if session.writer is None:
                await session.connect()
            stats["latencies"].append(await session.send(stats))
            stats["accepted"] += 1
            if not options.reuse:
                await session.close()
        except (ReplyError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            stats["errors"] += 1
            if len(stats["samples"]) < 5:
                stats["samples"].append(str(e))
            await session.close(polite=False)
    await session.close()


def read_logins(path):
    logins = []
    with open(path) as f:
        for line in f:
            if line.strip():
                address, password = line.split(None, 1)
                logins.append((address, password.strip()))
    return logins


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


async def run(options):
    logins = read_logins(options.logins) if options.logins else [None]
    tls_context = None
    if options.tls != "none":
        tls_context = ssl.create_default_context()
        tls_context.check_hostname = False
        tls_context.verify_mode = ssl.CERT_NONE
    stats = {"latencies": [], "accepted": 0, "errors": 0, "samples": []}
    budget = [options.count]
    start = time.perf_counter()
    await asyncio.gather(*(
        worker(options, logins[i % len(logins)], tls_context, budget, stats) for i in range(options.sessions)
    ))
    elapsed = time.perf_counter() - start
    lat = stats["latencies"]
    return {
        "accepted": stats["accepted"],
        "errors": stats["errors"],
        "error_samples": stats["samples"],
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(stats["accepted"] / elapsed, 1) if elapsed else None,
        "p50_ms": round(percentile(lat, 50) * 1000, 2) if lat else None,
        "p99_ms": round(percentile(lat, 99) * 1000, 2) if lat else None,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", choices=("none", "starttls", "implicit"), default="none")
    p.add_argument("--logins", help='file of "address password" lines; AUTH PLAIN as these')
    p.add_argument("--from", dest="sender", default="a@example.com")
    p.add_argument("--to", default="b@example.net")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--reuse", action="store_true", help="many messages per session (smtp-source -d)")
    options = p.parse_args(argv)
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    json.dump(asyncio.run(run(options)), sys.stdout)
    print()


if __name__ == "__main__":
    main()
