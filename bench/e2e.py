#!/usr/bin/env python3
"""One end-to-end measurement: run smtpload (as a separate process, so the
polling here does not steal its interpreter) against a server while counting
deliveries, then report accepted/s, delivered/s and acceptance latency.

    e2e.py --label postfix+dovecot --maildir /tmp/pw-bench/mail/u1/Maildir ... \
           [--out result.json] -- --port 12525 --connections 20 --messages-per-connection 50 \
           --rcpt u1@bench.test ...

Everything after ``--`` goes to smtpload.py (``--json`` is added).
delivered/s = messages delivered / (time of last delivery - time of first MAIL).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from delivered import add_counter_args, counter_from_args, wait_for  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        own, load_args = argv[:i], argv[i + 1 :]
    else:
        own, load_args = argv, []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="server")
    ap.add_argument("--out", help="also write the JSON result here")
    ap.add_argument("--timeout", type=float, default=900.0, help="overall limit, seconds")
    ap.add_argument("--stall-timeout", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=0.02, help="counter poll interval")
    ap.add_argument("--python", default=sys.executable)
    add_counter_args(ap)
    args = ap.parse_args(own)
    counter = counter_from_args(args)

    baseline = counter()
    cmd = [args.python, os.path.join(HERE, "smtpload.py"), *load_args, "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    load: dict[str, object] = {}
    out_holder: dict[str, str] = {}

    def reader() -> None:
        o, e = proc.communicate()
        out_holder["out"], out_holder["err"] = o, e

    th = threading.Thread(target=reader, daemon=True)
    th.start()

    def expected() -> int | None:
        if th.is_alive():
            return None
        if not load:
            try:
                load.update(json.loads(out_holder.get("out", "").strip().splitlines()[-1]))
            except (IndexError, json.JSONDecodeError):
                load["accepted"] = 0
                load["error"] = (out_holder.get("err") or "smtpload produced no output")[-2000:]
        return int(load.get("accepted", 0))  # type: ignore[arg-type]

    res = wait_for(
        counter,
        expected,
        baseline,
        timeout=args.timeout,
        interval=args.interval,
        stall_timeout=args.stall_timeout,
    )
    th.join(timeout=args.timeout)
    if not load:
        expected()
    start_ts = load.get("first_mail_ts")
    rate = res.rate(start_ts if isinstance(start_ts, float) else None)
    e2e_seconds = (
        res.last_delivery_ts - start_ts
        if isinstance(start_ts, float) and res.last_delivery_ts is not None
        else None
    )
    result = {
        "label": args.label,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load": load,
        "delivery": {
            "baseline": res.baseline,
            "expected": res.expected,
            "delivered": res.delivered,
            "complete": res.complete,
            "first_delivery_ts": res.first_delivery_ts,
            "last_delivery_ts": res.last_delivery_ts,
            "e2e_seconds": round(e2e_seconds, 4) if e2e_seconds is not None else None,
            "polls": res.polls,
        },
        "accepted_per_s": load.get("accepted_per_s", 0.0),
        "delivered_per_s": round(rate, 1),
        "p50_ms": (load.get("latency_ms") or {}).get("p50"),  # type: ignore[union-attr]
        "p99_ms": (load.get("latency_ms") or {}).get("p99"),  # type: ignore[union-attr]
        "smtpload_cmd": " ".join(cmd[1:]),
    }
    js = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(js + "\n")
    print(js)
    ok = res.complete and int(load.get("accepted", 0) or 0) > 0  # type: ignore[call-overload]
    if not ok:
        print(
            f"[e2e] {args.label}: delivered {res.delivered}/{res.expected}, "
            f"load errors: {load.get('errors')} {load.get('error_samples') or load.get('error')}",
            file=sys.stderr,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
