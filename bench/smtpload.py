#!/usr/bin/env python3
"""SMTP load generator for the postwerk benchmark (stdlib + asyncio only).

Opens ``--connections`` concurrent SMTP sessions; each says EHLO once, then sends
``--messages-per-connection`` messages (MAIL/RCPT/DATA, pipelined when the server
advertises PIPELINING), then QUIT.  Every message is a ~``--size`` byte
multipart/alternative (text + html) MIME message with a unique Message-ID.
Recipients are used round-robin across all messages.

Acceptance latency of a message = time from writing MAIL FROM to reading the
final reply to the end-of-data dot.  Output: accepted count, errors, wall time,
accepted msgs/s, latency percentiles (text, or one JSON object with --json).

Example:
    python3 bench/smtpload.py --port 12525 --connections 20 --messages-per-connection 50 \
        --rcpt u1@bench.test --rcpt u2@bench.test --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime

__all__ = ["make_message", "percentile", "run_load"]

_WORDS = [
    "the",
    "quarterly",
    "report",
    "attached",
    "shows",
    "revenue",
    "growth",
    "across",
    "all",
    "regions",
    "and",
    "we",
    "expect",
    "further",
    "improvement",
    "next",
    "quarter",
    "please",
    "review",
    "the",
    "figures",
    "before",
    "our",
    "meeting",
    "on",
    "thursday",
    "the",
    "budget",
    "for",
    "marketing",
    "was",
    "adjusted",
    "following",
    "feedback",
    "from",
    "the",
    "board",
    "regarding",
    "customer",
    "acquisition",
    "costs",
    "in",
    "the",
    "northern",
    "market",
    "our",
    "engineering",
    "team",
    "completed",
    "the",
    "migration",
    "of",
    "the",
    "billing",
    "system",
    "ahead",
    "of",
    "schedule",
    "and",
    "without",
    "downtime",
    "thanks",
    "to",
    "everyone",
    "involved",
    "let",
    "me",
    "know",
    "if",
    "you",
    "have",
    "questions",
    "about",
    "the",
    "invoice",
    "numbers",
    "or",
    "the",
    "shipping",
    "schedule",
    "for",
    "the",
    "new",
    "warehouse",
    "in",
    "hamburg",
    "we",
    "are",
    "still",
    "waiting",
    "for",
    "the",
    "signed",
    "contract",
    "from",
    "legal",
    "before",
    "we",
    "can",
    "order",
    "equipment",
    "the",
    "conference",
    "call",
    "is",
    "moved",
    "to",
    "friday",
    "at",
    "ten",
    "because",
    "several",
    "colleagues",
    "travel",
    "kind",
    "regards",
    "best",
    "wishes",
    "cheers",
    "thanks",
    "again",
    "project",
    "milestone",
    "deadline",
    "update",
    "draft",
    "proposal",
    "summary",
    "action",
    "items",
    "follow",
    "up",
    "agenda",
    "minutes",
    "attendance",
    "approved",
]

_SUBJECTS = (
    "Quarterly report",
    "Re: Budget review",
    "Meeting notes",
    "Fwd: Invoice",
    "Shipping schedule",
    "Project update",
    "Action items from today",
    "Contract status",
)


def _paragraphs(rng: random.Random, nchars: int) -> list[str]:
    out: list[str] = []
    total = 0
    while total < nchars:
        words = rng.choices(_WORDS, k=rng.randint(25, 70))
        words[0] = words[0].capitalize()
        para = " ".join(words) + "."
        out.append(para)
        total += len(para) + 2
    return out


def _wrap(text: str, width: int = 76) -> list[str]:
    lines: list[str] = []
    cur: list[str] = []
    n = 0
    for w in text.split(" "):
        if n + len(w) + (1 if cur else 0) > width and cur:
            lines.append(" ".join(cur))
            cur, n = [], 0
        n += len(w) + (1 if cur else 0)
        cur.append(w)
    if cur:
        lines.append(" ".join(cur))
    return lines


def make_message(
    index: int,
    sender: str,
    rcpt: str,
    size: int = 10240,
    rng: random.Random | None = None,
    tag: str = "",
) -> bytes:
    """A realistic multipart/alternative message of about ``size`` bytes.

    CRLF line endings, no line starts with '.', so it can go on the wire as is
    (followed by CRLF.CRLF) and into a Maildir file as is.
    """
    rng = rng or random.Random(index)
    now = time.time()
    boundary = f"=_pwbench_{index:08d}_{rng.getrandbits(48):012x}"
    host = socket.gethostname() or "localhost"
    msgid = f"<{int(now * 1000):x}.{index}.{tag or rng.getrandbits(32)}@{host}.bench.test>"
    headers = [
        f"Date: {format_datetime(datetime.now().astimezone())}",
        f"Message-ID: {msgid}",
        f"From: Bench Sender <{sender}>",
        f"To: <{rcpt}>",
        f"Subject: {rng.choice(_SUBJECTS)} #{index}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "X-Mailer: postwerk-bench smtpload",
        "",
        "This is a multi-part message in MIME format.",
        "",
    ]
    head = "\r\n".join(headers)
    part_hdr_txt = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
    )
    part_hdr_html = (
        f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
    )
    closing = f"--{boundary}--\r\n"
    overhead = len(head) + len(part_hdr_txt) + len(part_hdr_html) + len(closing) + 120
    budget = max(200, size - overhead)
    # html has ~13 chars markup per paragraph on top of the text
    paras = _paragraphs(rng, int(budget / 2.2))
    text_lines: list[str] = ["Hello,", ""]
    for p in paras:
        text_lines.extend(_wrap(p))
        text_lines.append("")
    text_lines.append("-- ")
    text_lines.append("Bench Sender")
    html_lines = ['<html><head><meta charset="utf-8"></head><body>', "<p>Hello,</p>"]
    for p in paras:
        html_lines.append("<p>")
        html_lines.extend(_wrap(p))
        html_lines.append("</p>")
    html_lines.append("<p>-- <br>Bench Sender</p></body></html>")
    body = (
        head
        + "\r\n"
        + part_hdr_txt
        + "\r\n".join(text_lines)
        + "\r\n\r\n"
        + part_hdr_html
        + "\r\n".join(html_lines)
        + "\r\n\r\n"
        + closing
    )
    return body.encode("utf-8")


def dot_stuff(data: bytes) -> bytes:
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, round(p / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


class SMTPError(Exception):
    pass


@dataclass
class Stats:
    accepted: int = 0
    errors: int = 0
    attempted: int = 0
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    first_mail_ts: float | None = None
    last_accept_ts: float | None = None
    pipelining_used: bool = False
    bytes_sent: int = 0

    def error(self, what: str, n: int = 1) -> None:
        self.errors += n
        if len(self.error_samples) < 20:
            self.error_samples.append(what)


async def _read_reply(reader: asyncio.StreamReader, timeout: float) -> tuple[int, list[str]]:
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(reader.readline(), timeout)
        if not raw:
            raise SMTPError("connection closed by server")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            break
    try:
        code = int(lines[-1][:3])
    except ValueError as e:
        raise SMTPError(f"bad reply {lines!r}") from e
    return code, lines


async def _session(
    conn_index: int,
    messages: list[tuple[str, bytes]],
    args: argparse.Namespace,
    stats: Stats,
) -> None:
    timeout = args.timeout
    sent = 0
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(args.host, args.port, limit=1 << 20), timeout
        )
    except (TimeoutError, OSError) as e:
        stats.error(f"conn {conn_index}: connect: {e!r}", len(messages))
        return
    try:
        code, lines = await _read_reply(reader, timeout)
        if code != 220:
            raise SMTPError(f"greeting {lines}")
        writer.write(f"EHLO {args.ehlo_name}\r\n".encode())
        code, lines = await _read_reply(reader, timeout)
        if code != 250:
            raise SMTPError(f"EHLO {lines}")
        exts = {ln[4:].split(" ")[0].upper() for ln in lines[1:]}
        pipelining = args.pipelining and "PIPELINING" in exts
        if pipelining:
            stats.pipelining_used = True
        for rcpt, data in messages:
            mail_cmd = (
                f"MAIL FROM:<{args.sender}> SIZE={len(data)}\r\n"
                if "SIZE" in exts
                else (f"MAIL FROM:<{args.sender}>\r\n")
            )
            rcpt_cmd = f"RCPT TO:<{rcpt}>\r\n"
            t0 = time.perf_counter()
            if stats.first_mail_ts is None:
                stats.first_mail_ts = time.time()
            if pipelining:
                writer.write((mail_cmd + rcpt_cmd + "DATA\r\n").encode())
                c_mail, l_mail = await _read_reply(reader, timeout)
                c_rcpt, l_rcpt = await _read_reply(reader, timeout)
                c_data, l_data = await _read_reply(reader, timeout)
            else:
                writer.write(mail_cmd.encode())
                c_mail, l_mail = await _read_reply(reader, timeout)
                c_rcpt, l_rcpt, c_data, l_data = 0, [], 0, []
                if c_mail == 250:
                    writer.write(rcpt_cmd.encode())
                    c_rcpt, l_rcpt = await _read_reply(reader, timeout)
                    if c_rcpt in (250, 251):
                        writer.write(b"DATA\r\n")
                        c_data, l_data = await _read_reply(reader, timeout)
            if c_data == 354 and (c_mail != 250 or c_rcpt not in (250, 251)):
                # server took DATA although the envelope failed: send an empty body
                writer.write(b".\r\n")
                await _read_reply(reader, timeout)
            if c_mail != 250 or c_rcpt not in (250, 251) or c_data != 354:
                stats.error(f"envelope: MAIL {l_mail[-1:]} RCPT {l_rcpt[-1:]} DATA {l_data[-1:]}")
                writer.write(b"RSET\r\n")
                await _read_reply(reader, timeout)
                sent += 1
                continue
            writer.write(dot_stuff(data))
            writer.write(b"\r\n.\r\n" if not data.endswith(b"\r\n") else b".\r\n")
            stats.bytes_sent += len(data)
            code, lines = await _read_reply(reader, timeout)
            t1 = time.perf_counter()
            sent += 1
            if code == 250:
                stats.accepted += 1
                stats.latencies.append(t1 - t0)
                stats.last_accept_ts = time.time()
            else:
                stats.error(f"end of data: {lines[-1]}")
        writer.write(b"QUIT\r\n")
        try:
            await _read_reply(reader, timeout)
        except SMTPError:
            pass
    except (TimeoutError, OSError, SMTPError, asyncio.IncompleteReadError) as e:
        stats.error(f"conn {conn_index} after {sent} msgs: {e!r}", len(messages) - sent)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def build_messages(args: argparse.Namespace) -> list[list[tuple[str, bytes]]]:
    rcpts = args.rcpt or ["u1@bench.test"]
    rng = random.Random(args.seed)
    tag = f"{int(time.time())}{rng.getrandbits(20):x}"
    per_conn: list[list[tuple[str, bytes]]] = [[] for _ in range(args.connections)]
    i = 0
    for _m in range(args.messages_per_connection):
        for c in range(args.connections):
            rcpt = rcpts[i % len(rcpts)]
            data = make_message(i, args.sender, rcpt, args.size, random.Random(rng.random()), tag)
            per_conn[c].append((rcpt, data))
            i += 1
    return per_conn


async def run_load(args: argparse.Namespace) -> dict[str, object]:
    per_conn = build_messages(args)
    total = sum(len(x) for x in per_conn)
    avg_size = sum(len(d) for x in per_conn for _, d in x) / max(1, total)
    stats = Stats(attempted=total)
    t_start = time.time()
    p_start = time.perf_counter()
    await asyncio.gather(*(_session(i, msgs, args, stats) for i, msgs in enumerate(per_conn)))
    wall = time.perf_counter() - p_start
    lat = sorted(stats.latencies)
    load_seconds = (
        (stats.last_accept_ts - stats.first_mail_ts)
        if stats.first_mail_ts is not None and stats.last_accept_ts is not None
        else 0.0
    )
    ms = 1000.0
    return {
        "host": args.host,
        "port": args.port,
        "connections": args.connections,
        "messages_per_connection": args.messages_per_connection,
        "attempted": total,
        "accepted": stats.accepted,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "avg_message_bytes": round(avg_size),
        "pipelining_used": stats.pipelining_used,
        "start_ts": t_start,
        "first_mail_ts": stats.first_mail_ts,
        "last_accept_ts": stats.last_accept_ts,
        "wall_seconds": round(wall, 4),
        "load_seconds": round(load_seconds, 4),
        "accepted_per_s": round(stats.accepted / load_seconds, 1) if load_seconds > 0 else 0.0,
        "latency_ms": {
            "p50": round(percentile(lat, 50) * ms, 2),
            "p90": round(percentile(lat, 90) * ms, 2),
            "p99": round(percentile(lat, 99) * ms, 2),
            "max": round(lat[-1] * ms, 2) if lat else 0.0,
            "mean": round(sum(lat) / len(lat) * ms, 2) if lat else 0.0,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--messages-per-connection", type=int, default=50)
    ap.add_argument("--size", type=int, default=10240, help="approximate message size in bytes")
    ap.add_argument("--rcpt", action="append", help="recipient (repeatable; round-robin)")
    ap.add_argument("--sender", default="loadgen@client.bench.test")
    ap.add_argument("--ehlo-name", default="loadgen.client.bench.test")
    ap.add_argument(
        "--pipelining",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pipeline MAIL+RCPT+DATA when the server advertises PIPELINING (default on)",
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for any reply")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.connections < 1 or args.messages_per_connection < 1:
        ap.error("--connections and --messages-per-connection must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run_load(args))
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        assert isinstance(lat, dict)
        print(
            f"{args.host}:{args.port}  {result['accepted']}/{result['attempted']} accepted, "
            f"{result['errors']} errors, wall {result['wall_seconds']}s, "
            f"{result['accepted_per_s']} msgs/s accepted, "
            f"latency p50 {lat['p50']} ms p99 {lat['p99']} ms max {lat['max']} ms, "
            f"avg size {result['avg_message_bytes']} B, pipelining {result['pipelining_used']}"
        )
        for s in result["error_samples"][:5]:  # type: ignore[index]
            print(f"  error: {s}", file=sys.stderr)
    return 0 if result["accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())
