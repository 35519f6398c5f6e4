#!/usr/bin/env python3
"""The split benchmark's table (bench/split.sh): medians per configuration and the
two ratios issue 5 asks for, split-pg / aio-pg (the cost of CAS → Mailbox over
loopback; target ≥ 0.8) and aio-pg / aio-sqlite (PostgreSQL against SQLite).

    split_report.py RESULTS_DIR [--markdown]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CONFIGS = ("aio-sqlite", "aio-pg", "split-pg")
# (file stem, JSON key, label, higher is better)
MEASURES = (
    ("smtp", "accepted_per_s", "SMTP accepted/s", True),
    ("smtp", "delivered_per_s", "SMTP delivered/s (end to end)", True),
    ("smtp", "p50_ms", "SMTP acceptance p50, ms", False),
    ("fetch-meta", "median_ms", "UID FETCH 1:* metadata, ms", False),
    ("session-ops", "ops_per_s", "IMAP 20 sessions, ops/s", True),
)
SPLIT_TARGET = 0.8


def median_of(directory: Path, config: str, stem: str, key: str) -> float | None:
    values = []
    for path in sorted(directory.glob(f"{config}-{stem}-run*.json")):
        value = json.loads(path.read_text()).get(key)
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else None


def throughput_ratio(a: float | None, b: float | None, higher_better: bool) -> float | None:
    """a relative to b as a share of b's throughput (times: b / a)."""
    if a is None or b is None or a == 0 or b == 0:
        return None
    return a / b if higher_better else b / a


def render(directory: Path, markdown: bool) -> str:
    rows = []
    for stem, key, label, higher in MEASURES:
        values = {c: median_of(directory, c, stem, key) for c in CONFIGS}
        split = throughput_ratio(values["split-pg"], values["aio-pg"], higher)
        pg = throughput_ratio(values["aio-pg"], values["aio-sqlite"], higher)
        rows.append((label, values, split, pg))
    head = ("measurement", *CONFIGS, "split/aio-pg", "pg/sqlite")

    def cell(v: float | None, ratio: bool = False) -> str:
        if v is None:
            return "-"
        return f"{v:.2f} ×" if ratio else f"{v:,.1f}"

    lines = []
    table = [head] + [
        (label, *(cell(values[c]) for c in CONFIGS), cell(split, True), cell(pg, True))
        for label, values, split, pg in rows
    ]
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines.extend("| " + " | ".join(r) + " |" for r in table[1:])
    else:
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table)
    lines.append("")
    lines.append(
        f"Ratios are throughput shares (for times: the inverse). Issue 5's target: "
        f"split/aio-pg ≥ {SPLIT_TARGET} on the same cores."
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    print(render(args.directory, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
