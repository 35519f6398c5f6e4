#!/usr/bin/env python3
"""Wait until the machine is quiet: all CPUs together >= --idle % idle over a
--window-second window (from /proc/stat), or --max-wait seconds passed.  Prints
what it saw; exit 0 when quiet, 1 on timeout.  Used by run.sh --wait-quiet on
shared machines, where other work skews the figures."""

from __future__ import annotations

import argparse
import sys
import time


def cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    return idle, sum(parts)


def idle_pct(window: float) -> float:
    i0, t0 = cpu_times()
    time.sleep(window)
    i1, t1 = cpu_times()
    return 100.0 * (i1 - i0) / max(1, t1 - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=float, default=90.0)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--max-wait", type=float, default=300.0)
    args = ap.parse_args(argv)
    start = time.time()
    while True:
        p = idle_pct(args.window)
        waited = time.time() - start
        if p >= args.idle:
            print(f"quiet ({p:.0f}% idle) after {waited:.0f}s")
            return 0
        if waited >= args.max_wait:
            print(f"NOT quiet ({p:.0f}% idle) after {waited:.0f}s -- measured anyway")
            return 1


if __name__ == "__main__":
    sys.exit(main())
