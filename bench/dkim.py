"""
DKIM signatures per second on one core, for 10 KiB and 1 MiB messages,
with a 2048-bit RSA key and relaxed/relaxed canonicalization:

- trekmail's own signer (trekmail.relay.dkim.sign), which is what the
  relay runs for every managed message, with the RSA key and with an
  Ed25519 one (RFC 8463; the second signature of docs/dkim.md's dual
  signing);
- dkimpy's dkim.sign called directly (what trekmail wraps);
- the floor: one RSA-2048 signature plus SHA-256 of the raw bytes with
  the cryptography package, i.e. what a signer costs with no Python
  canonicalization at all.

    .venv/bin/python bench/dkim.py [--seconds 3]
"""

import argparse
import hashlib
import os
import sys
import time

# This file is named dkim.py: take its folder off the path so that
# "import dkim" (here and in trekmail.relay.dkim) finds dkimpy, not this.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa  # noqa: E402

sys.path += [HERE, os.path.dirname(HERE)]
import benchlib  # noqa: E402


def message(size):
    header = (
        b"From: Alice <user0@d0.example.com>\r\nTo: <b@example.net>\r\nSubject: dkim bench\r\n"
        b"Date: Sat, 21 Nov 2026 08:00:00 +0000\r\nMessage-ID: <1@d0.example.com>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * ((size - len(header)) // len(line) + 1)
    return header + body[: size - len(header)]


def rate(fn, seconds):
    fn()
    count = 0
    start = time.perf_counter()
    cpu = time.process_time()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return count / elapsed, (time.process_time() - cpu) / count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    options = p.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    try:
        from trekmail.relay import dkim as ours
    except ImportError:
        ours = None

    signers = []
    if ours is not None:
        signers.append(("trekmail.relay.dkim.sign", lambda m: ours.sign(m, "d0.example.com", "dkim", pem, time.time())))
        ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        signers.append(("trekmail.relay.dkim.sign, Ed25519",
                        lambda m: ours.sign(m, "d0.example.com", "dkime", ed_pem, time.time())))
    signers.append((
        "dkimpy dkim.sign",
        lambda m: dkim.sign(m, b"dkim", b"d0.example.com", pem, canonicalize=(b"relaxed", b"relaxed"),
                            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]),
    ))
    signers.append((
        "floor: SHA-256 + RSA-2048 (cryptography)",
        lambda m: key.sign(hashlib.sha256(m).digest() + m[:200], padding.PKCS1v15(), hashes.SHA256()),
    ))

    load_before = benchlib.load()
    rows = []
    for name, fn in signers:
        row = [name]
        for size in (10 * 1024, 1024 * 1024):
            data = message(size)
            per_second, cpu = rate(lambda: fn(data), options.seconds)
            row += [benchlib.fmt(per_second, 1), benchlib.fmt(cpu * 1000, 2)]
        rows.append(row)
    benchlib.table(
        "DKIM signing, one core (%s before, %s after)" % (load_before, benchlib.load()),
        ["signer", "10 KiB sig/s", "10 KiB CPU ms/sig", "1 MiB sig/s", "1 MiB CPU ms/sig"],
        rows,
    )


if __name__ == "__main__":
    main()
