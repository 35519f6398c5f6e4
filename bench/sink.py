#!/usr/bin/env python3
"""A fast SMTP sink for the outbound benchmark (stdlib only): accepts everything,
keeps nothing, counts messages and remembers when each one arrived.

    sink.py serve [--host 127.0.0.9] [--port 12530] [--control-port 12531] [--pid-file F]
    sink.py stats [--host 127.0.0.9] [--control-port 12531] [--full]
    sink.py reset [--host ...] [--control-port ...]
    sink.py wait  --expect N [--timeout 600] [--stall-timeout 60] [--json]

SMTP side: 220 greeting; EHLO answers PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES;
MAIL, RCPT, RSET, NOOP, HELO and anything unknown get 250; DATA gets 354 when a RCPT
was given (503 otherwise), the end of the data 250; QUIT 221 and close; STARTTLS and
AUTH 502 (not offered). Connections are kept as long as the client wants (reuse).
Replies to pipelined commands go out in one write. The data is scanned for the
final dot and dropped. Only the terminating line matters, so dot-stuffing needs no
undoing. Costs a few tens of microseconds of CPU per 10 KB message.

Control side (a second port, one line in, one JSON line out, then close):
``stats`` (``stats full`` adds arrivals per 100 ms), ``reset`` (zero the counters;
open connections stay open and count as reused). Counters:
messages, bytes, rcpts, connections (opened since the reset), open, peak_open,
first_ts/last_ts (epoch seconds of the first/last accepted message), per-connection
transaction counts of closed connections, rsets, quits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

EHLO_REPLY = (
    b"250-sink.bench.test\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 104857600\r\n"
    b"250-8BITMIME\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)
END = b"\r\n.\r\n"


class Stats:
    def __init__(self) -> None:
        self.open = 0
        self.reset()

    def reset(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.rcpts = 0
        self.connections = 0
        self.peak_open = self.open
        self.arrivals = array("d")
        self.per_conn: list[int] = []  # transactions of connections closed since the reset
        self.rsets = 0
        self.quits = 0
        self.reset_ts = time.time()

    def snapshot(self, full: bool = False) -> dict[str, Any]:
        arr = self.arrivals
        per = sorted(self.per_conn)
        out: dict[str, Any] = {
            "messages": self.messages,
            "bytes": self.bytes,
            "rcpts": self.rcpts,
            "connections": self.connections,
            "open": self.open,
            "peak_open": self.peak_open,
            "first_ts": arr[0] if arr else None,
            "last_ts": arr[-1] if arr else None,
            "closed_connections": len(per),
            "tx_per_closed_connection": {
                "min": per[0] if per else None,
                "median": per[len(per) // 2] if per else None,
                "max": per[-1] if per else None,
                "mean": round(sum(per) / len(per), 2) if per else None,
            },
            "rsets": self.rsets,
            "quits": self.quits,
            "reset_ts": self.reset_ts,
            "now": time.time(),
        }
        if full and arr:
            t0 = arr[0]
            buckets: dict[int, int] = {}
            for t in arr:
                k = int((t - t0) * 10)
                buckets[k] = buckets.get(k, 0) + 1
            last = max(buckets)
            out["per_100ms"] = [buckets.get(i, 0) for i in range(last + 1)]
        return out


STATS = Stats()


class SinkProtocol(asyncio.Protocol):
    __slots__ = ("buf", "closing", "epoch", "in_data", "rcpts", "transport", "tx")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""
        self.in_data = False
        self.rcpts = 0
        self.tx = 0
        self.closing = False
        self.epoch = STATS.reset_ts
        STATS.connections += 1
        STATS.open += 1
        if STATS.open > STATS.peak_open:
            STATS.peak_open = STATS.open
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.write(b"220 sink.bench.test ESMTP sink\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        STATS.open -= 1
        if self.epoch == STATS.reset_ts:
            STATS.per_conn.append(self.tx)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if self.in_data:
                i = buf.find(END, pos)
                if i < 0:
                    # keep the last 4 bytes: the terminator may straddle two reads
                    keep = max(pos, n - 4)
                    STATS.bytes += keep - pos
                    pos = keep
                    break
                STATS.bytes += i - pos
                pos = i + 5
                self.in_data = False
                self.tx += 1
                STATS.messages += 1
                STATS.arrivals.append(time.time())
                self.rcpts = 0
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            i = buf.find(b"\r\n", pos)
            if i < 0:
                if n - pos > 4096:  # no command is that long: drop the junk
                    pos = n
                break
            verb = buf[pos : pos + 4].upper()
            pos = i + 2
            if verb == b"MAIL":
                self.rcpts = 0
                out.append(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                self.rcpts += 1
                STATS.rcpts += 1
                out.append(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                if self.rcpts:
                    out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    self.in_data = True
                    # a virtual CRLF before the data, so an empty body (".\r\n") ends too
                    buf = b"\r\n" + buf[pos:]
                    pos, n = 0, len(buf)
                else:
                    out.append(b"503 5.5.1 Error: need RCPT command\r\n")
            elif verb == b"EHLO":
                out.append(EHLO_REPLY)
            elif verb == b"QUIT":
                STATS.quits += 1
                out.append(b"221 2.0.0 Bye\r\n")
                self.closing = True
                break
            elif verb == b"RSET":
                STATS.rsets += 1
                self.rcpts = 0
                out.append(b"250 2.0.0 Ok\r\n")
            elif verb in (b"STAR", b"AUTH"):
                out.append(b"502 5.5.1 Error: command not implemented\r\n")
            else:  # HELO, NOOP, anything else
                out.append(b"250 2.0.0 Ok\r\n")
        self.buf = buf[pos:] if pos < n else b""
        if out:
            self.transport.write(b"".join(out))
        if self.closing:
            self.transport.close()


async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = (await asyncio.wait_for(reader.readline(), 5)).decode().strip().lower()
        if line == "reset":
            STATS.reset()
            reply: dict[str, Any] = {"ok": True, "reset_ts": STATS.reset_ts}
        elif line.startswith("stats"):
            reply = STATS.snapshot(full=line.endswith("full"))
        else:
            reply = {"error": f"unknown command {line!r}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except (TimeoutError, OSError, UnicodeDecodeError):
        pass
    finally:
        writer.close()


def write_pid(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        SinkProtocol, args.host, args.port, reuse_address=True, backlog=1024
    )
    ctl = await asyncio.start_server(control, args.host, args.control_port, reuse_address=True)
    if args.pid_file:
        write_pid(args.pid_file)
    print(
        f"sink: smtp {args.host}:{args.port}, control {args.host}:{args.control_port}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    ctl.close()
    if args.pid_file:
        try:
            os.unlink(args.pid_file)
        except OSError:
            pass


def ask(host: str, port: int, command: str, timeout: float = 5.0) -> dict[str, Any]:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return json.loads(b"".join(chunks))  # type: ignore[no-any-return]


def wait_for(
    host: str,
    port: int,
    expect: int,
    timeout: float = 600.0,
    stall_timeout: float = 60.0,
    interval: float = 0.02,
    on_first: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Poll until the sink holds `expect` messages; the final stats, with
    "complete" true or false (stalled or timed out). `on_first` is called when the
    first message is seen."""
    start = time.monotonic()
    last_n, last_change = -1, start
    while True:
        st = ask(host, port, "stats")
        now = time.monotonic()
        if on_first is not None and st["messages"] > 0:
            on_first()
            on_first = None
        if st["messages"] != last_n:
            last_n, last_change = st["messages"], now
        if st["messages"] >= expect:
            st = ask(host, port, "stats full")
            st["complete"] = True
            return st
        if now - start > timeout or now - last_change > stall_timeout:
            st = ask(host, port, "stats full")
            st["complete"] = False
            return st
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["serve", "stats", "reset", "wait"])
    ap.add_argument("--host", default=os.environ.get("PW_SINK_HOST", "127.0.0.9"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PW_SINK_PORT", "12530")))
    ap.add_argument(
        "--control-port",
        type=int,
        default=int(os.environ.get("PW_SINK_CONTROL_PORT", "12531")),
    )
    ap.add_argument("--pid-file")
    ap.add_argument("--full", action="store_true", help="stats: add arrivals per 100 ms")
    ap.add_argument("--expect", type=int)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--stall-timeout", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args))
        return 0
    if args.command == "stats":
        print(json.dumps(ask(args.host, args.control_port, "stats full" if args.full else "stats")))
        return 0
    if args.command == "reset":
        print(json.dumps(ask(args.host, args.control_port, "reset")))
        return 0
    if args.expect is None:
        ap.error("wait needs --expect N")
    st = wait_for(args.host, args.control_port, args.expect, args.timeout, args.stall_timeout)
    if args.json:
        print(json.dumps(st))
    else:
        span = (st["last_ts"] or 0) - (st["first_ts"] or 0)
        rate = st["messages"] / span if span > 0 else 0.0
        print(
            f"{st['messages']} messages over {st['connections']} connections, "
            f"first→last {span:.3f}s = {rate:.1f} msgs/s, complete {st['complete']}"
        )
    return 0 if st["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
