#!/usr/bin/env python3
"""Count delivered messages and wait for deliveries (stdlib only).

Counters (each returns the number of messages delivered so far):

* ``MaildirCounter``  -- files in ``new/`` + ``cur/`` of one or more Maildirs
  (Postfix -> Dovecot LMTP).  ``cur/`` is only rescanned when its mtime changes,
  so polling a 100,000-message Maildir stays cheap.
* ``SqliteCounter``   -- ``SELECT count(*) FROM item`` (configurable) on
  ``<data-dir>/postwerk.db``, opened read-only (postwerk).
* ``CommandCounter``  -- a shell command that prints one integer, e.g.
  ``postwerk message list u1@bench.test --json |
  python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'``

CLI:
    delivered.py count (--maildir DIR ... | --sqlite DB [--query Q] | --count-cmd CMD)
    delivered.py wait  (same counter options) --expect N [--baseline B] [--start-ts T]
                       [--timeout S] [--json]

``wait`` polls until ``count - baseline >= expect`` and reports end-to-end
delivered/s = expect / (time of last delivery - start_ts).  ``start_ts`` is the
epoch time of the first MAIL (``first_mail_ts`` in smtpload's JSON); without it,
the time of the first observed delivery is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_SQLITE_QUERY = "SELECT count(*) FROM item"

Counter = Callable[[], int]


class MaildirCounter:
    """Messages in ``new/`` and ``cur/`` of the given Maildir roots."""

    def __init__(self, maildirs: Sequence[str]) -> None:
        self.dirs: list[str] = []
        for m in maildirs:
            for sub in ("new", "cur"):
                self.dirs.append(os.path.join(m, sub))
        self._cache: dict[str, tuple[int, int]] = {}  # dir -> (mtime_ns, count)

    @staticmethod
    def _scan(d: str) -> int:
        n = 0
        try:
            with os.scandir(d) as it:
                for e in it:
                    if not e.name.startswith("."):
                        n += 1
        except FileNotFoundError:
            return 0
        return n

    def __call__(self) -> int:
        total = 0
        for d in self.dirs:
            try:
                mt = os.stat(d).st_mtime_ns
            except FileNotFoundError:
                continue
            cached = self._cache.get(d)
            # A directory whose mtime is unchanged (and not in the current
            # second, where mtime granularity could hide a change) is not rescanned.
            if cached and cached[0] == mt and time.time_ns() - mt > 2_000_000_000:
                total += cached[1]
                continue
            n = self._scan(d)
            self._cache[d] = (mt, n)
            total += n
        return total


class SqliteCounter:
    """Runs a counting query on the postwerk SQLite database, read-only."""

    def __init__(self, db_path: str, query: str = DEFAULT_SQLITE_QUERY) -> None:
        self.db_path = db_path
        self.query = query
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"file:{os.path.abspath(self.db_path)}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
        return self._conn

    def __call__(self) -> int:
        if not os.path.exists(self.db_path):
            return 0
        try:
            row = self._connect().execute(self.query).fetchone()
        except sqlite3.OperationalError as e:
            # table not created yet, or database busy: try again next poll
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if "no such table" in str(e):
                return 0
            raise
        return int(row[0] or 0) if row else 0


class CommandCounter:
    """A shell command printing one integer (its last line is used)."""

    def __init__(self, cmd: str, timeout: float = 60.0) -> None:
        self.cmd = cmd
        self.timeout = timeout

    def __call__(self) -> int:
        out = subprocess.run(
            self.cmd, shell=True, capture_output=True, text=True, timeout=self.timeout, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"count command failed ({out.returncode}): {out.stderr.strip()[:300]}"
            )
        lines = [ln for ln in out.stdout.strip().splitlines() if ln.strip()]
        if not lines:
            raise RuntimeError("count command printed nothing")
        return int(lines[-1].strip())


def postwerk_sqlite_counter(data_dir: str, query: str = DEFAULT_SQLITE_QUERY) -> SqliteCounter:
    """The pluggable postwerk counter: ``<data-dir>/postwerk.db``, table ``item``."""
    return SqliteCounter(os.path.join(data_dir, "postwerk.db"), query)


def add_counter_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("counter (pick one)")
    g.add_argument("--maildir", action="append", help="Maildir root (repeatable)")
    g.add_argument("--sqlite", help="SQLite database to query (e.g. DATA/postwerk.db)")
    g.add_argument("--postwerk-data-dir", help="postwerk data dir: query DIR/postwerk.db")
    g.add_argument("--query", default=DEFAULT_SQLITE_QUERY, help="counting SQL for --sqlite")
    g.add_argument("--count-cmd", help="shell command that prints the delivered count")


def counter_from_args(args: argparse.Namespace) -> Counter:
    if args.maildir:
        return MaildirCounter(args.maildir)
    if args.sqlite:
        return SqliteCounter(args.sqlite, args.query)
    if args.postwerk_data_dir:
        return postwerk_sqlite_counter(args.postwerk_data_dir, args.query)
    if args.count_cmd:
        return CommandCounter(args.count_cmd)
    raise SystemExit("give --maildir, --sqlite, --postwerk-data-dir or --count-cmd")


@dataclass
class WaitResult:
    baseline: int
    expected: int
    delivered: int
    complete: bool
    first_delivery_ts: float | None
    last_delivery_ts: float | None
    polls: int

    def rate(self, start_ts: float | None) -> float:
        start = start_ts if start_ts is not None else self.first_delivery_ts
        if start is None or self.last_delivery_ts is None or self.delivered == 0:
            return 0.0
        dt = self.last_delivery_ts - start
        return self.delivered / dt if dt > 0 else 0.0


def wait_for(
    counter: Counter,
    expect: int | Callable[[], int | None],
    baseline: int,
    timeout: float = 600.0,
    interval: float = 0.02,
    stall_timeout: float = 60.0,
    stop: Callable[[], bool] | None = None,
) -> WaitResult:
    """Poll ``counter`` until ``expect`` new messages arrived (``expect`` may be a
    callable returning the target once known, or None while unknown).

    Stops at ``timeout``, or when nothing new arrived for ``stall_timeout`` seconds
    after the target became known.  The time of the last delivery is the time of
    the poll that first saw the final count (resolution: ``interval`` plus one
    counter call)."""
    t_end = time.time() + timeout
    first_ts: float | None = None
    last_ts: float | None = None
    last_n = 0
    last_change = time.time()
    polls = 0
    target: int | None = None
    while True:
        n = counter() - baseline
        now = time.time()
        polls += 1
        if n != last_n:
            if first_ts is None and n > 0:
                first_ts = now
            last_ts = now
            last_n = n
            last_change = now
        target = expect() if callable(expect) else expect
        if target is not None and n >= target:
            break
        if now > t_end:
            break
        if target is not None and now - last_change > stall_timeout:
            break
        if stop is not None and stop():
            break
        time.sleep(interval)
    return WaitResult(
        baseline=baseline,
        expected=target if target is not None else -1,
        delivered=last_n,
        complete=target is not None and last_n >= target,
        first_delivery_ts=first_ts,
        last_delivery_ts=last_ts,
        polls=polls,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="count / wait for delivered messages")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("count", help="print the current count")
    add_counter_args(c)
    w = sub.add_parser("wait", help="wait for N deliveries and report delivered/s")
    add_counter_args(w)
    w.add_argument("--expect", type=int, required=True)
    w.add_argument("--baseline", type=int, default=None, help="default: count at start")
    w.add_argument("--start-ts", type=float, default=None, help="epoch of the first MAIL")
    w.add_argument("--load-json", help="smtpload --json output file: take first_mail_ts from it")
    w.add_argument("--timeout", type=float, default=600.0)
    w.add_argument("--interval", type=float, default=0.02)
    w.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    counter = counter_from_args(args)
    if args.cmd == "count":
        print(counter())
        return 0
    baseline = counter() if args.baseline is None else args.baseline
    res = wait_for(counter, args.expect, baseline, args.timeout, args.interval)
    start_ts = args.start_ts
    if start_ts is None and args.load_json:
        with open(args.load_json) as f:
            start_ts = json.load(f).get("first_mail_ts")
    out = {
        "baseline": res.baseline,
        "expected": res.expected,
        "delivered": res.delivered,
        "complete": res.complete,
        "start_ts": start_ts,
        "first_delivery_ts": res.first_delivery_ts,
        "last_delivery_ts": res.last_delivery_ts,
        "delivered_per_s": round(res.rate(start_ts), 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"delivered {res.delivered}/{res.expected} "
            f"({'complete' if res.complete else 'INCOMPLETE'}), "
            f"{out['delivered_per_s']} msgs/s end to end"
        )
    return 0 if res.complete else 1


if __name__ == "__main__":
    sys.exit(main())
