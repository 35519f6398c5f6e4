#!/usr/bin/env python3
"""Write N realistic ~10 KB messages straight into a Maildir's cur/ (used to
pre-fill the 100,000-message mailbox for Dovecot; Dovecot then indexes them with
``doveadm force-resync`` + ``doveadm index``).  No fsync: this is set-up, not
measurement.  Messages are made from a pool of distinct bodies with a unique
Message-ID header each, so filling 100,000 takes seconds, not minutes."""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smtpload import make_message


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--rcpt", default="u20@bench.test")
    ap.add_argument("--pool", type=int, default=500, help="distinct bodies to cycle through")
    args = ap.parse_args(argv)
    cur = os.path.join(args.maildir, "cur")
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(args.maildir, d), exist_ok=True)
    rng = random.Random(4711)
    pool = []
    for i in range(args.pool):
        msg = make_message(
            i, "prefill@client.bench.test", args.rcpt, args.size, random.Random(rng.random())
        )
        head, _, body = msg.partition(b"\r\nMessage-ID: ")
        _, _, rest = body.partition(b"\r\n")
        pool.append((head, rest))
    host = socket.gethostname().replace("/", "_").replace(":", "_")
    now = int(time.time()) - args.count  # spread mtimes into the past
    pid = os.getpid()
    t0 = time.time()
    for i in range(args.count):
        head, rest = pool[i % len(pool)]
        msg = head + f"\r\nMessage-ID: <prefill.{i}.{pid}@bench.test>\r\n".encode() + rest
        # Maildir uses LF line endings on disk (Dovecot's own files do too)
        msg = msg.replace(b"\r\n", b"\n")
        ts = now + i
        name = f"{ts}.M{i}P{pid}.{host},S={len(msg)}:2,S"
        path = os.path.join(cur, name)
        with open(path, "wb") as f:
            f.write(msg)
        os.utime(path, (ts, ts))
        if (i + 1) % 20000 == 0:
            print(f"  {i + 1}/{args.count} ({time.time() - t0:.0f}s)", file=sys.stderr)
    print(f"wrote {args.count} messages to {cur} in {time.time() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
