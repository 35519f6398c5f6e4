#!/usr/bin/env python3
"""Side-by-side table of a benchmark run (reads the JSON files run.sh and
mailbox_size.sh leave in the results directory) with ratios and the targets.

    report.py RESULTS_DIR [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def load(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if 0 < abs(v) < 0.095:
            return f"{v:.3f}{unit} (1/{1 / v:,.0f})"
        if 0 < abs(v) < 1:
            return f"{v:.2f}{unit}"
        return f"{v:,.1f}{unit}"
    return f"{v}{unit}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir")
    ap.add_argument("--markdown", action="store_true", help="markdown table (default: plain)")
    args = ap.parse_args(argv)
    d = args.results_dir
    pf = load(os.path.join(d, "postfix.json"))
    pw = load(os.path.join(d, "postwerk.json"))
    pf_idle = load(os.path.join(d, "postfix-idle.json"))
    pw_idle = load(os.path.join(d, "postwerk-idle.json"))
    pf_mb = load(os.path.join(d, "postfix-mailbox.json"))
    pw_mb = load(os.path.join(d, "postwerk-mailbox.json"))

    def g(r: dict[str, Any] | None, *keys: str) -> Any:
        for k in keys:
            if r is None:
                return None
            r = r.get(k)  # type: ignore[assignment]
        return r

    def ratio(a: Any, b: Any) -> float | None:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
            return a / b
        return None

    rows: list[tuple[str, Any, Any, str, str]] = []
    acc = (g(pf, "accepted_per_s"), g(pw, "accepted_per_s"))
    r = ratio(acc[1], acc[0])
    rows.append(("accepted msgs/s", acc[0], acc[1], fmt(r, "×") if r else "—", ""))
    dl = (g(pf, "delivered_per_s"), g(pw, "delivered_per_s"))
    r = ratio(dl[1], dl[0])
    rows.append(
        ("delivered msgs/s (end to end)", dl[0], dl[1], fmt(r, "×") if r else "—", "≥ 2.0×")
    )
    p99 = (g(pf, "p99_ms"), g(pw, "p99_ms"))
    r = ratio(p99[1], p99[0])
    rows.append(
        ("p99 acceptance latency (ms)", p99[0], p99[1], fmt(r, "×") if r else "—", "< 50 ms")
    )
    p50 = (g(pf, "p50_ms"), g(pw, "p50_ms"))
    r = ratio(p50[1], p50[0])
    rows.append(("p50 acceptance latency (ms)", p50[0], p50[1], fmt(r, "×") if r else "—", ""))
    idle = (g(pf_idle, "pss_per_conn_kb"), g(pw_idle, "pss_per_conn_kb"))
    r = ratio(idle[1], idle[0])
    rows.append(
        (
            "PSS per idle SMTP connection (kB)",
            idle[0],
            idle[1],
            fmt(r, "×") if r else "—",
            "≤ 0.05×",
        )
    )
    mb_small = (g(pf_mb, "small", "delivered_per_s"), g(pw_mb, "small", "delivered_per_s"))
    mb_big = (g(pf_mb, "big", "delivered_per_s"), g(pw_mb, "big", "delivered_per_s"))
    rows.append(("delivered msgs/s into an empty mailbox", mb_small[0], mb_small[1], "", ""))
    prefill = g(pf_mb, "prefill") or g(pw_mb, "prefill") or 100000
    big_label = f"delivered msgs/s into a {prefill:,}-msg mailbox"
    rows.append((big_label, mb_big[0], mb_big[1], "", ""))
    rel = (ratio(mb_big[0], mb_small[0]), ratio(mb_big[1], mb_small[1]))
    rows.append(("  big / empty", rel[0], rel[1], "", "≥ 0.8 (postwerk)"))

    pf_err = g(pf, "load", "errors")
    pw_err = g(pw, "load", "errors")
    header = ("metric", "Postfix+Dovecot", "postwerk", "postwerk / Postfix", "target")
    table = [header] + [(a, fmt(b), fmt(c), dd, e) for a, b, c, dd, e in rows]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] * len(header)) + "|")
        for row in table[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for j, row in enumerate(table):
            print("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)))
            if j == 0:
                print("  ".join("-" * w for w in widths))
    notes = []
    if pf:
        ld = pf["load"]
        notes.append(
            f"Postfix+Dovecot: {ld.get('accepted')}/{ld.get('attempted')} accepted, "
            f"errors {pf_err}, "
            f"{ld.get('connections')} connections × {ld.get('messages_per_connection')} msgs, "
            f"avg {ld.get('avg_message_bytes')} B, pipelining {ld.get('pipelining_used')}"
        )
    if pw:
        ld = pw["load"]
        notes.append(
            f"postwerk: {ld.get('accepted')}/{ld.get('attempted')} accepted, errors {pw_err}, "
            f"pipelining {ld.get('pipelining_used')}"
        )
    else:
        skipped = load(os.path.join(d, "postwerk-skipped.json"))
        notes.append("postwerk: not measured" + (f" ({skipped.get('reason')})" if skipped else ""))
    for n in notes:
        print(("- " if args.markdown else "") + n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
