"""
The IMAP client side of bench/imap.py, speaking the protocol over raw
asyncio streams so that client-side parsing does not colour the figures.

    imapclient.py append  --port P --user U --password W --mbox FILE --count 10000 [--connections 4]
    imapclient.py latency --port P --user U --password W [--repeat 5]
    imapclient.py idle    --port P --logins FILE --count 10000 [--per-login 100]

append: fills INBOX with COUNT messages taken in turn from an mbox file.
latency: times SELECT INBOX, FETCH 1:* (FLAGS) and UID SEARCH commands
(median and max over REPEAT tries, milliseconds).
idle: opens COUNT connections (LOGIN, SELECT INBOX, IDLE) spread over
the logins in FILE, prints {"held": n, ...} once they are all idle, then
holds them until its stdin closes.  Each prints one JSON object.
"""

import argparse
import asyncio
import json
import re
import resource
import ssl
import statistics
import sys
import time

TAGGED = re.compile(rb"^(A\d+) (OK|NO|BAD)")


class ImapError(Exception):
    pass


class Connection:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.serial = 0

    @classmethod
    async def open(cls, host, port, local_host=None, tls=False):
        context = client_context() if tls else None
        reader, writer = await asyncio.open_connection(
            host, port, limit=1 << 22, local_addr=(local_host, 0) if local_host else None, ssl=context)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise ImapError(greeting.decode(errors="replace"))
        return cls(reader, writer)

    async def command(self, text, literal=None):
        """Send one command; returns (status line, untagged response bytes)."""
        self.serial += 1
        tag = b"A%d" % self.serial
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:
            self.writer.write(tag + b" " + text + b" {%d}\r\n" % len(literal))
            line = await self.reader.readline()
            if not line.startswith(b"+"):
                raise ImapError(line.decode(errors="replace"))
            self.writer.write(literal + b"\r\n")
        received = 0
        while True:
            line = await self.reader.readline()
            if not line:
                raise ImapError("connection closed")
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ImapError(line.decode(errors="replace").strip())
                return line, received
            received += len(line)
            literal_size = re.search(rb"\{(\d+)\}\r\n$", line)
            if literal_size:
                received += len(await self.reader.readexactly(int(literal_size.group(1))))

    async def login(self, user, password):
        await self.command(b"LOGIN %s %s" % (quoted(user), quoted(password)))

    async def close(self):
        try:
            self.writer.close()
            await self.writer.wait_closed()
        except OSError:
            pass


_CONTEXT = []


def client_context():
    """One context for every connection: building one loads the CA store (~20 ms)."""
    if not _CONTEXT:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _CONTEXT.append(context)
    return _CONTEXT[0]


def quoted(text):
    return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def mbox_messages(path):
    with open(path, "rb") as f:
        data = f.read()
    messages = []
    for part in re.split(rb"(?m)^From [^\n]*\n", data):
        if part.strip():
            messages.append(part.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return messages


async def append(o):
    messages = mbox_messages(o.mbox)
    next_index = [0]
    start = time.perf_counter()

    async def worker():
        c = await Connection.open(o.host, o.port, tls=o.tls)
        await c.login(o.user, o.password)
        while next_index[0] < o.count:
            i = next_index[0]
            next_index[0] += 1
            await c.command(b"APPEND INBOX ()", messages[i % len(messages)])
        await c.command(b"LOGOUT")
        await c.close()

    await asyncio.gather(*(worker() for _ in range(o.connections)))
    elapsed = time.perf_counter() - start
    return {"appended": o.count, "seconds": round(elapsed, 2), "per_second": round(o.count / elapsed, 1)}


async def latency(o):
    c = await Connection.open(o.host, o.port, tls=o.tls)
    await c.login(o.user, o.password)
    commands = [
        ("SELECT INBOX", b"SELECT INBOX"),
        ("FETCH 1:* (FLAGS)", b"FETCH 1:* (FLAGS)"),
        ("UID SEARCH ALL", b"UID SEARCH ALL"),
        ("UID SEARCH UNSEEN", b"UID SEARCH UNSEEN"),
        ('UID SEARCH SUBJECT "message 777"', b'UID SEARCH SUBJECT "message 777"'),
    ]
    timings = {name: [] for name, _ in commands}
    sizes = {}
    for _ in range(o.repeat):
        for name, text in commands:
            if text.startswith(b"SELECT"):
                await c.command(b"EXAMINE INBOX")
            start = time.perf_counter()
            _, received = await c.command(text)
            timings[name].append((time.perf_counter() - start) * 1000)
            sizes[name] = received
    await c.command(b"LOGOUT")
    await c.close()
    return {
        name: {"median_ms": round(statistics.median(t), 2), "max_ms": round(max(t), 2), "bytes": sizes[name]}
        for name, t in timings.items()
    }


async def idle(o):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logins = [line.split(None, 1) for line in open(o.logins) if line.strip()]
    held = []
    failures = []
    start = time.perf_counter()
    semaphore = asyncio.Semaphore(o.parallel)

    async def one(n):
        n += o.offset
        user, password = logins[(n // o.per_login) % len(logins)]
        # spread over 127.0.0.x source addresses: 20,000 connections from one
        # address to one port would nearly exhaust the ephemeral port range
        local = "127.0.0.%d" % (2 + n // 10000)
        async with semaphore:
            try:
                c = await Connection.open(o.host, o.port, local, o.tls)
                await c.login(user, password.strip())
                await c.command(b"SELECT INBOX")
                c.serial += 1
                c.writer.write(b"A%d IDLE\r\n" % c.serial)
                line = await c.reader.readline()
                if not line.startswith(b"+"):
                    raise ImapError(line.decode(errors="replace").strip())
                held.append(c)
            except (ImapError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as e:
                failures.append(str(e)[:200])

    await asyncio.gather(*(one(n) for n in range(o.count)))
    elapsed = time.perf_counter() - start
    report = {
        "held": len(held), "failed": len(failures), "failure_samples": sorted(set(failures))[:5],
        "seconds": round(elapsed, 1), "per_second": round(len(held) / elapsed, 1) if elapsed else None,
    }
    print(json.dumps(report), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    alive = sum(1 for c in held if not c.reader.at_eof())
    for c in held:
        c.writer.close()
    return {"still_open_at_end": alive}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("append", "latency", "idle"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true", help="implicit TLS (imaps)")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--mbox")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--logins")
    p.add_argument("--per-login", type=int, default=100)
    p.add_argument("--offset", type=int, default=0, help="index of this client's first connection (idle)")
    p.add_argument("--parallel", type=int, default=100, help="connections being opened at once (idle)")
    o = p.parse_args()
    if o.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    result = asyncio.run({"append": append, "latency": latency, "idle": idle}[o.mode](o))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
