#!/usr/bin/env python3
"""How many durable 10 KB writes per second the disk under a directory takes, second
by second: each write creates a file, writes it, fsyncs it and fsyncs the directory
(what a Maildir delivery or a queue-file commit costs).  A mail server that fsyncs each
acknowledged message cannot beat this rate per writer; a rate that falls over the run
points to a throttled (token-bucket) virtual disk.

    fsync_probe.py [--dir /tmp/pw-bench/fsync-probe] [--seconds 20] [--size 10240] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/pw-bench/fsync-probe")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    payload = os.urandom(args.size)
    t_start = time.time()
    t_end = t_start + args.seconds
    per_second: dict[int, int] = {}
    lock = threading.Lock()

    def worker(k: int) -> None:
        d = os.path.join(args.dir, f"w{k}")
        os.makedirs(d, exist_ok=True)
        dfd = os.open(d, os.O_RDONLY)
        i = 0
        try:
            while (now := time.time()) < t_end:
                p = os.path.join(d, f"{i}")
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, payload)
                os.fsync(fd)
                os.close(fd)
                os.fsync(dfd)
                i += 1
                with lock:
                    s = int(now - t_start)
                    per_second[s] = per_second.get(s, 0) + 1
        finally:
            os.close(dfd)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shutil.rmtree(args.dir, ignore_errors=True)
    series = [per_second.get(s, 0) for s in range(int(args.seconds))]
    total = sum(series)
    out = {
        "threads": args.threads,
        "size": args.size,
        "seconds": args.seconds,
        "durable_writes_per_s": round(total / args.seconds, 1),
        "per_second": series,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['durable_writes_per_s']} durable {args.size}-byte writes/s "
            f"({args.threads} writer(s)); per second: {series}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
