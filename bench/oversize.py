"""
The memory target: the server's memory stays flat while a client streams
a 1 GiB DATA (SMTP) or APPEND literal (IMAP) that it refuses.  The client
streams as fast as the server reads; a thread samples the server's RSS
every 100 ms.  Used by smtp.py and imap.py (--oversize).
"""

import asyncio
import base64
import ssl
import threading
import time
from pathlib import Path

CHUNK = (b"x" * 998 + b"\r\n") * 256  # 256 KiB of 1,000-byte lines


def rss_kib(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler:
    def __init__(self, pid):
        self.pid = pid
        self.before = rss_kib(pid)
        self.peak = self.before
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            time.sleep(0.1)

    def stop(self):
        self.running = False
        self.thread.join()
        return {"rss_before_mib": self.before / 1024, "rss_peak_mib": self.peak / 1024,
                "growth_mib": (self.peak - self.before) / 1024}


def _context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _stream(writer, total):
    """Exactly C{total} bytes: a literal's announced size must be what is sent."""
    sent = 0
    while sent < total:
        chunk = CHUNK[: total - sent]
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)
    return sent


async def _smtp(port, login, total):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_context())

    async def reply():
        while True:
            line = await reader.readline()
            if not line or line[3:4] != b"-":
                return line

    await reply()
    for command in (b"EHLO oversize.bench", b"AUTH PLAIN " + base64.b64encode(
            b"\0" + login[0].encode() + b"\0" + login[1].encode()),
            b"MAIL FROM:<%s>" % login[0].encode(), b"RCPT TO:<b@example.net>", b"DATA"):
        writer.write(command + b"\r\n")
        answer = await reply()
    if not answer.startswith(b"354"):
        return {"refusal": answer.decode(errors="replace").strip(), "streamed_mib": 0}
    start = time.monotonic()
    try:
        sent = await _stream(writer, total)
        writer.write(b"\r\n.\r\n")
        answer = (await reply()).decode(errors="replace").strip()
    except (ConnectionError, ssl.SSLError) as e:
        sent, answer = total, "connection closed: %s" % e.__class__.__name__
    writer.close()
    return {"refusal": answer, "streamed_mib": sent / 2**20, "seconds": time.monotonic() - start}


async def _imap(port, login, total):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_context(), limit=1 << 20)
    capability = await reader.readline()
    writer.write(b'a LOGIN "%s" "%s"\r\n' % (login[0].encode(), login[1].encode()))
    while not (line := await reader.readline()).startswith(b"a "):
        capability += line
    plus = b"LITERAL+" in capability.upper() or b"LITERAL-" in capability.upper()
    start = time.monotonic()
    # a non-synchronising literal, when offered, obliges the server to read
    # (and discard) every byte; otherwise the server can refuse at once
    writer.write(b"b APPEND INBOX {%d%s}\r\n" % (total, b"+" if plus else b""))
    sent = 0
    if not plus:
        answer = (await reader.readline()).decode(errors="replace").strip()
        if not answer.startswith("+"):
            writer.close()
            return {"refusal": answer, "streamed_mib": 0, "seconds": time.monotonic() - start}
    try:
        sent = await _stream(writer, total)
        writer.write(b"\r\n")
        while not (line := await reader.readline()).startswith(b"b ") and line:
            pass
        answer = line.decode(errors="replace").strip() or "connection closed"
        writer.write(b"c NOOP\r\n")
        after = (await asyncio.wait_for(reader.readline(), 10)).decode(errors="replace").strip()
        answer += "; then NOOP -> %s" % (after or "connection closed")
    except (ConnectionError, ssl.SSLError, asyncio.TimeoutError) as e:
        answer = "connection closed: %s" % e.__class__.__name__
    writer.close()
    return {"refusal": answer, "streamed_mib": sent / 2**20, "seconds": time.monotonic() - start}


def measure(protocol, pid, port, login, total=2**30):
    sampler = Sampler(pid)
    result = asyncio.run({"smtp": _smtp, "imap": _imap}[protocol](port, login, total))
    result.update(sampler.stop())
    return result
