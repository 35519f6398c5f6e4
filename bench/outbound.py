#!/usr/bin/env python3
"""Outbound relay measurements against the SMTP sink (bench/sink.py), for
bench/outbound.sh.  One measurement per call; the server is driven through the
shell commands given (bench/peers/postfix_relay.sh, bench/peers/postwerk_relay.sh).

    outbound.py queue --label L --out F --hold-cmd C --queued-cmd C --release-cmd C
                      [--pid-cmd C] [--wait-quiet S] [--pyspy BIN --pyspy-out F] -- SMTPLOAD ARGS
    outbound.py e2e   --label L --out F [--pid-cmd C] [--wait-quiet S] -- SMTPLOAD ARGS
    outbound.py pick  OUT FILE...         # copy the run with the median headline rate to OUT
    outbound.py report DIR [--markdown]   # side-by-side table of DIR/outbound-*.json

queue (queue -> sink): hold the server's outbound delivery (hold-cmd), load the
messages with smtpload, wait until queued-cmd prints the number accepted (all are
queued, none has left), wait for a quiet machine, then run release-cmd and wait
until the sink has them all.  Headline: messages / (last arrival - first arrival)
at the sink; also reported: release -> first arrival, messages / (last arrival -
release), connections the sink saw, messages per connection, arrivals per 100 ms,
CPU used meanwhile (whole machine, and the server process when --pid-cmd is given).

e2e (accept -> sink): the sink is up and the server relays at once; headline:
messages / (last arrival at the sink - first MAIL sent by smtpload).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from sink import ask, wait_for  # noqa: E402

HEADLINE = {"queue": "queue_to_sink_per_s", "e2e": "accept_to_sink_per_s"}
TICK = os.sysconf("SC_CLK_TCK")


def sh(cmd: str) -> str:
    return subprocess.run(
        ["bash", "-c", cmd], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return float(total - idle), float(total)


def process_cpu(pid: int | None) -> float | None:
    """utime + stime (seconds) of one process, all its threads."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


class CpuMeter:
    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.m0 = machine_cpu()
        self.p0 = process_cpu(pid)
        self.t0 = time.monotonic()

    def result(self, messages: int) -> dict[str, Any]:
        m1 = machine_cpu()
        p1 = process_cpu(self.pid)
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        ncpu = os.cpu_count() or 1
        out: dict[str, Any] = {
            "seconds": round(time.monotonic() - self.t0, 3),
            "machine_busy_pct": round(100.0 * busy / total, 1) if total else None,
            "machine_cpu_ms_per_msg": (
                round(1000.0 * busy / TICK / messages, 3) if messages else None
            ),
            "cpus": ncpu,
        }
        if self.p0 is not None and p1 is not None:
            used = p1 - self.p0
            out["server_cpu_s"] = round(used, 3)
            out["server_cpu_ms_per_msg"] = round(1000.0 * used / messages, 3) if messages else None
            out["server_cpu_pct_of_one_core"] = (
                round(100.0 * used / out["seconds"], 1) if out["seconds"] else None
            )
        return out


def run_load(python: str, load_args: list[str]) -> dict[str, Any]:
    cmd = [python, os.path.join(HERE, "smtpload.py"), *load_args, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)  # type: ignore[no-any-return]
    except json.JSONDecodeError:
        raise SystemExit(f"smtpload failed: {proc.stderr.strip()[-500:]}") from None


def quiet(max_wait: float) -> str:
    if max_wait <= 0:
        return "not waited"
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "quiet.py"), "--max-wait", str(max_wait)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc.stdout.strip()


def sink_summary(st: dict[str, Any]) -> dict[str, Any]:
    n = st["messages"]
    span = (st["last_ts"] - st["first_ts"]) if st.get("first_ts") else 0.0
    return {
        "messages": n,
        "complete": st.get("complete"),
        "first_ts": st.get("first_ts"),
        "last_ts": st.get("last_ts"),
        "span_s": round(span, 4),
        "connections": st["connections"],
        "peak_open": st["peak_open"],
        "msgs_per_connection": round(n / st["connections"], 2) if st["connections"] else None,
        "tx_per_closed_connection": st.get("tx_per_closed_connection"),
        "rsets": st.get("rsets"),
        "per_100ms": st.get("per_100ms"),
    }


def pid_from(cmd: str | None) -> int | None:
    if not cmd:
        return None
    try:
        out = sh(cmd)
        return int(out.split()[0]) if out else None
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return None


def measure_queue(args: argparse.Namespace, load_args: list[str]) -> dict[str, Any]:
    host, cport = args.sink_host, args.sink_control_port
    if args.hold_cmd:
        sh(args.hold_cmd)
    ask(host, cport, "reset")
    load = run_load(args.python, load_args)
    n = int(load["accepted"])
    # all accepted messages queued and held?
    deadline = time.monotonic() + args.queue_timeout
    queued = -1
    while time.monotonic() < deadline:
        queued = int(sh(args.queued_cmd) or 0)
        if queued >= n:
            break
        time.sleep(0.2)
    leaked = ask(host, cport, "stats")["messages"]
    quiet_note = quiet(args.wait_quiet)
    pid = pid_from(args.pid_cmd)
    spy = None
    if args.pyspy and args.pyspy_out and pid is not None:
        spy = subprocess.Popen(
            [
                args.pyspy,
                "record",
                "-p",
                str(pid),
                "-f",
                "raw",
                "-o",
                args.pyspy_out,
                "-r",
                "200",
                *(["--gil"] if args.pyspy_gil else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
    ask(host, cport, "reset")
    t_release = time.time()
    sh(args.release_cmd)
    t_released = time.time()
    # CPU is counted from the first arrival at the sink (within 20 ms) to the last
    meter: list[CpuMeter] = []
    st = wait_for(
        host,
        cport,
        n,
        args.timeout,
        args.stall_timeout,
        on_first=lambda: meter.append(CpuMeter(pid)),
    )
    cpu_result = meter[0].result(st["messages"]) if meter else {}
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
    sink = sink_summary(st)
    got = sink["messages"]
    span = sink["span_s"]
    last = sink["last_ts"]
    first = sink["first_ts"]
    return {
        "label": args.label,
        "mode": "queue",
        "messages": n,
        "queued_before_release": queued,
        "sink_before_release": leaked,
        "quiet": quiet_note,
        "release_cmd_s": round(t_released - t_release, 3),
        "release_to_first_s": round(first - t_release, 3) if first else None,
        "release_to_last_s": round(last - t_release, 3) if last else None,
        "queue_to_sink_per_s": round(got / span, 1) if span > 0 else 0.0,
        "release_to_last_per_s": round(got / (last - t_release), 1) if last else 0.0,
        "complete": bool(st.get("complete")) and got >= n,
        "sink": sink,
        "cpu": cpu_result,
        "load": {k: v for k, v in load.items() if k not in ("error_samples",)},
        "load_errors": load.get("error_samples"),
    }


def measure_e2e(args: argparse.Namespace, load_args: list[str]) -> dict[str, Any]:
    host, cport = args.sink_host, args.sink_control_port
    quiet_note = quiet(args.wait_quiet)
    ask(host, cport, "reset")
    cpu = CpuMeter(pid_from(args.pid_cmd))
    load = run_load(args.python, load_args)
    n = int(load["accepted"])
    st = wait_for(host, cport, n, args.timeout, args.stall_timeout)
    cpu_result = cpu.result(st["messages"])
    sink = sink_summary(st)
    got = sink["messages"]
    first_mail = load.get("first_mail_ts")
    last = sink["last_ts"]
    e2e_s = (last - first_mail) if (last and first_mail) else 0.0
    return {
        "label": args.label,
        "mode": "e2e",
        "messages": n,
        "quiet": quiet_note,
        "accept_to_sink_per_s": round(got / e2e_s, 1) if e2e_s > 0 else 0.0,
        "accepted_per_s": load.get("accepted_per_s"),
        "sink_span_per_s": round(got / sink["span_s"], 1) if sink["span_s"] > 0 else 0.0,
        "first_mail_to_last_s": round(e2e_s, 3),
        "lag_after_last_accept_s": (
            round(last - load["last_accept_ts"], 3) if last and load.get("last_accept_ts") else None
        ),
        "complete": bool(st.get("complete")) and got >= n,
        "sink": sink,
        "cpu": cpu_result,
        "load": {k: v for k, v in load.items() if k not in ("error_samples",)},
        "load_errors": load.get("error_samples"),
    }


def load_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pick(out: str, files: list[str]) -> int:
    runs = []
    for f in files:
        d = load_json(f)
        if d is not None:
            runs.append((d.get(HEADLINE[d["mode"]], 0.0), f))
    if not runs:
        return 1
    runs.sort()
    shutil.copy(runs[len(runs) // 2][1], out)
    return 0


def fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def report(d: str, markdown: bool) -> int:
    r = {
        (who, mode): load_json(os.path.join(d, f"outbound-{who}-{mode}.json"))
        for who in ("postfix", "postwerk")
        for mode in ("queue", "e2e")
    }

    def g(who: str, mode: str, *keys: str) -> Any:
        v: Any = r[(who, mode)]
        for k in keys:
            if not isinstance(v, dict):
                return None
            v = v.get(k)
        return v

    def ratio(a: Any, b: Any) -> str:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
            return f"{a / b:.2f} ×"
        return "—"

    rows: list[tuple[str, str, str, str, str]] = []

    def row(
        name: str,
        mode: str,
        keys: tuple[str, ...],
        target: str = "",
        ratio_on: bool = True,
        nd: int = 1,
    ) -> None:
        a, b = g("postfix", mode, *keys), g("postwerk", mode, *keys)
        rows.append((name, fmt(a, nd), fmt(b, nd), ratio(b, a) if ratio_on else "", target))

    row(
        "queue → sink msgs/s (sink: first → last arrival)",
        "queue",
        ("queue_to_sink_per_s",),
        "≥ 1.5 ×",
    )
    row("queue → sink msgs/s, counted from the release", "queue", ("release_to_last_per_s",))
    row("  release → first arrival (s)", "queue", ("release_to_first_s",), ratio_on=False, nd=2)
    row("accept → sink msgs/s (first MAIL → last arrival)", "e2e", ("accept_to_sink_per_s",))
    row("  accepted msgs/s (same run)", "e2e", ("accepted_per_s",))
    row(
        "  sink behind the last 250 by (s)",
        "e2e",
        ("lag_after_last_accept_s",),
        ratio_on=False,
        nd=2,
    )
    row("connections to the sink (queue run)", "queue", ("sink", "connections"), ratio_on=False)
    row("  messages per connection", "queue", ("sink", "msgs_per_connection"), ratio_on=False)
    row("  peak concurrent connections", "queue", ("sink", "peak_open"), ratio_on=False)
    row(
        "machine CPU busy during the drain (%)",
        "queue",
        ("cpu", "machine_busy_pct"),
        ratio_on=False,
    )
    row("  machine CPU ms per message", "queue", ("cpu", "machine_cpu_ms_per_msg"), nd=2)
    row(
        "  server process CPU ms per message",
        "queue",
        ("cpu", "server_cpu_ms_per_msg"),
        ratio_on=False,
        nd=2,
    )
    header = ("metric", "Postfix", "postwerk", "postwerk ÷ Postfix", "target")
    table = [header, *rows]
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] * len(header)) + "|")
        for t in rows:
            print("| " + " | ".join(t) + " |")
    else:
        widths = [max(len(t[i]) for t in table) for i in range(len(header))]
        for j, t in enumerate(table):
            print("  ".join(c.ljust(widths[i]) for i, c in enumerate(t)).rstrip())
            if j == 0:
                print("  ".join("-" * w for w in widths))
    # every run
    print()
    print("runs (queue→sink / release→last / accept→sink msgs/s):")
    for who in ("postfix", "postwerk"):
        q = sorted(
            f
            for f in os.listdir(d)
            if f.startswith(f"outbound-{who}-queue-run") and f.endswith(".json")
        )
        e = sorted(
            f
            for f in os.listdir(d)
            if f.startswith(f"outbound-{who}-e2e-run") and f.endswith(".json")
        )
        parts = []
        for i in range(max(len(q), len(e))):
            qd = load_json(os.path.join(d, q[i])) if i < len(q) else None
            ed = load_json(os.path.join(d, e[i])) if i < len(e) else None
            parts.append(
                f"{fmt(qd and qd.get('queue_to_sink_per_s'))}"
                f" / {fmt(qd and qd.get('release_to_last_per_s'))}"
                f" / {fmt(ed and ed.get('accept_to_sink_per_s'))}"
                + (
                    ""
                    if (qd or {}).get("complete", True) and (ed or {}).get("complete", True)
                    else " (INCOMPLETE)"
                )
            )
        print(f"  {who}: " + ";  ".join(parts))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        own, load_args = argv[:i], argv[i + 1 :]
    else:
        own, load_args = argv, []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["queue", "e2e", "pick", "report"])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--label", default="server")
    ap.add_argument("--out")
    ap.add_argument("--sink-host", default=os.environ.get("PW_SINK_HOST", "127.0.0.9"))
    ctl = int(os.environ.get("PW_SINK_CONTROL_PORT", "12531"))
    ap.add_argument("--sink-control-port", type=int, default=ctl)
    ap.add_argument("--hold-cmd")
    ap.add_argument("--queued-cmd")
    ap.add_argument("--release-cmd")
    ap.add_argument("--pid-cmd", help="prints the server's pid (CPU of that process is reported)")
    ap.add_argument("--wait-quiet", type=float, default=0.0)
    ap.add_argument("--queue-timeout", type=float, default=120.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--stall-timeout", type=float, default=60.0)
    ap.add_argument("--pyspy", help="py-spy binary: profile the server (--pid-cmd) while it drains")
    ap.add_argument("--pyspy-out")
    ap.add_argument("--pyspy-gil", action="store_true")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(own)
    if args.command == "pick":
        if len(args.paths) < 2:
            ap.error("pick OUT FILE...")
        return pick(args.paths[0], args.paths[1:])
    if args.command == "report":
        if len(args.paths) != 1:
            ap.error("report DIR")
        return report(args.paths[0], args.markdown)
    if args.command == "queue":
        if not (args.queued_cmd and args.release_cmd):
            ap.error("queue needs --queued-cmd and --release-cmd")
        result = measure_queue(args, load_args)
    else:
        result = measure_e2e(args, load_args)
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
