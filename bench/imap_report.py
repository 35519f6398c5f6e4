#!/usr/bin/env python3
"""The IMAP/POP3 side-by-side table of a bench/imap.sh results directory.

Reads ``dovecot-*.json`` and ``postwerk-*.json`` (bench/imapload.py output) and prints
each measurement for both servers, postwerk's ratio to Dovecot measured in the same
run, issue 4's target for that ratio, and the figure the issue measured for Dovecot
on its machine (for scale only: the ratio is against this run's Dovecot).

    bench/imap_report.py /tmp/pw-bench/results/latest [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    name: str
    stem: str  # file: <server>-<stem>.json
    key: str  # value in that JSON
    unit: str
    lower_is_better: bool
    target: float  # postwerk / Dovecot must be <= (lower is better) or >= this
    issue_dovecot: str  # what issue 4 measured for Dovecot


def rows(sizes: list[int]) -> list[Row]:
    issue_select = {10000: "14 ms", 100000: "232 ms"}
    issue_meta = {10000: "76 ms", 100000: "780 ms"}
    out: list[Row] = []
    for n in sizes:
        out.append(
            Row(
                f"SELECT, {n:,} msgs",
                f"select-{n}",
                "median_ms",
                "ms",
                True,
                1.5,
                issue_select.get(n, "-"),
            )
        )
        out.append(
            Row(
                f"UID FETCH 1:* meta, {n:,}",
                f"fetch-meta-{n}",
                "median_ms",
                "ms",
                True,
                1.5,
                issue_meta.get(n, "-"),
            )
        )
    out += [
        Row("body FETCH (BODY.PEEK[])", "fetch-body", "median_mb_per_s", "MB/s", False, 0.5, "580"),
        Row("20 sessions: SEL+50 hdr+body", "session-ops", "ops_per_s", "op/s", False, 0.7, "1134"),
        Row("20 × connect..LOGOUT loop", "login-loop", "ops_per_s", "op/s", False, 1.0, "134"),
        Row("POP3 RETR, 20 clients", "pop3-retr", "messages_per_s", "msg/s", False, 0.5, "11900"),
        Row("idle IDLE conn (TLS), PSS", "idle", "pss_per_conn_kb", "KB", True, 0.05, "1900"),
    ]
    return out


def load(d: Path, server: str, stem: str) -> dict[str, Any] | None:
    f = d / f"{server}-{stem}.json"
    if not f.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(f.read_text())
    except ValueError:
        return None
    return data


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def table(d: Path) -> tuple[list[str], list[list[str]], list[str]]:
    sizes = sorted(
        {int(p.stem.rsplit("-", 1)[1]) for p in d.glob("*-select-*.json") if "-run" not in p.stem}
    )
    head = ["measurement", "unit", "Dovecot", "postwerk", "pw/dv", "target", "ok", "issue: Dovecot"]
    body: list[list[str]] = []
    notes: list[str] = []
    for r in rows(sizes):
        dv = load(d, "dovecot", r.stem)
        pw = load(d, "postwerk", r.stem)
        vd = dv.get(r.key) if dv else None
        vp = pw.get(r.key) if pw else None
        for server, data in (("Dovecot", dv), ("postwerk", pw)):
            if data and data.get("errors"):
                notes.append(f"{server} {r.stem}: {'; '.join(map(str, data['errors'][:3]))}")
        ratio = (
            vp / vd
            if isinstance(vd, (int, float)) and vd and isinstance(vp, (int, float))
            else None
        )
        ok = "-"
        if r.stem == "idle" and isinstance(vp, (int, float)) and vp <= 0:
            notes.append(
                f"postwerk idle: PSS fell while the connections were open ({vp} KB/conn):"
                " not measurable in this run"
            )
            ratio = None
        if ratio is not None:
            ok = "yes" if (ratio <= r.target if r.lower_is_better else ratio >= r.target) else "NO"
        sign = "<=" if r.lower_is_better else ">="
        body.append(
            [
                r.name,
                r.unit,
                fmt(vd),
                fmt(vp),
                f"{ratio:.3g}" if ratio is not None else "-",
                f"{sign} {r.target:g}",
                ok,
                r.issue_dovecot,
            ]
        )
        for server, data in (("Dovecot", dv), ("postwerk", pw)):
            if data and (data.get("client_cpu_cores") or 0) > 0.8:
                notes.append(
                    f"{server} {r.stem}: the client used {data['client_cpu_cores']} cores "
                    "-- it may have limited the rate"
                )
    if (d / "postwerk-skipped.json").exists():
        notes.append("postwerk skipped: " + (d / "postwerk-skipped.json").read_text().strip())
    return head, body, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    head, body, notes = table(args.dir)
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in body:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        for row in [head, *body]:
            print(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    print()
    print(
        "Times are medians; pw/dv is postwerk over Dovecot in this run; 'issue: Dovecot' is what"
        " issue 4 measured on its machine (scale only). All over TLS, same client"
        " (bench/imapload.py)."
    )
    for n in notes:
        print("note: " + n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
