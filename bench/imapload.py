#!/usr/bin/env python3
"""IMAP/POP3 load for issue 4: the same client against postwerk and Dovecot.

One subcommand per measurement, each printing one JSON object:

  select       SELECT INBOX on a mailbox of N messages (fresh session per repeat)
  fetch-meta   UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE) after SELECT
  fetch-body   FETCH a:b BODY.PEEK[] of --count messages; MB/s of literal bytes read
  session-ops  --clients sessions, logged in once, each looping SELECT INBOX +
               FETCH of 50 headers (BODY.PEEK[HEADER]) + FETCH of 1 body; ops/s
  login-loop   the same triple, wrapped in connect + TLS + LOGIN ... LOGOUT; ops/s
  pop3-retr    --clients POP3 sessions (one user each), RETR 1..n round and round; msgs/s
  idle         N connections LOGIN + SELECT + IDLE and held; server PSS per connection

The client is built to cost little CPU (client and servers share 2 cores): blocking
sockets with TLS, one process per concurrent client, no imaplib; responses are
scanned in chunks (runs of untagged lines without literals are counted with one
bytes.count; literal contents are skipped, never parsed). Each multi-client result
records the client's own CPU use (``client_cpu_cores``) and the whole machine's
(``machine_busy_pct``), so a client-bound run shows. Any NO/BAD/BYE, short response
or count mismatch is an error in the JSON (``errors``: command and response), never
retried. TLS certificates are not verified (self-signed bench certificates);
every TLS connect is a full handshake (no session resumption), for both servers.

    bench/imapload.py select --port 12993 --user mbox10000@bench.test --repeat 5
    bench/imapload.py session-ops --port 20993 --clients 20 --duration 30
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from idle_memory import children, pss_kb

RECV = 262144
CRLF = b"\r\n"


class ProtocolError(Exception):
    """The server answered something other than success: command and response."""

    def __init__(self, command: str, response: str) -> None:
        super().__init__(f"{command!r} -> {response!r}")
        self.command = command
        self.response = response


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Response:
    status: bytes  # the tagged line (or POP3 status line)
    untagged: int = 0  # untagged responses ("* ...") seen
    literal_bytes: int = 0  # octets inside literals (IMAP) or the multi-line body (POP3)
    wire_bytes: int = 0  # octets received for this response
    lines: list[bytes] = field(default_factory=list)  # untagged lines, only when kept


class Wire:
    """A blocking (TLS) connection with a chunked receive buffer."""

    def __init__(self, host: str, port: int, tls: bool, timeout: float) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = (
            tls_context().wrap_socket(raw, server_hostname=None) if tls else raw
        )
        self.buf = bytearray()
        self.pos = 0
        self.received = 0
        self.scratch = bytearray(RECV)

    def fill(self) -> None:
        if self.pos and self.pos >= len(self.buf) // 2:
            del self.buf[: self.pos]
            self.pos = 0
        n = self.sock.recv_into(self.scratch, RECV)
        if n == 0:
            raise ConnectionError("connection closed by server")
        self.received += n
        self.buf += memoryview(self.scratch)[:n]

    def skip(self, n: int) -> None:
        """Consume n octets (a literal) without keeping them."""
        have = len(self.buf) - self.pos
        if have >= n:
            self.pos += n
            return
        n -= have
        self.buf.clear()
        self.pos = 0
        view = memoryview(self.scratch)
        while n > 0:
            got = self.sock.recv_into(view, min(n, RECV))
            if got == 0:
                raise ConnectionError("connection closed by server inside a literal")
            self.received += got
            n -= got

    def line(self) -> bytes:
        e = self.buf.find(CRLF, self.pos)
        while e < 0:
            self.fill()
            e = self.buf.find(CRLF, self.pos)
        line = bytes(self.buf[self.pos : e])
        self.pos = e + 2
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Imap:
    def __init__(self, host: str, port: int, tls: bool = True, timeout: float = 120.0) -> None:
        self.w = Wire(host, port, tls, timeout)
        self.n = 0
        greeting = self.w.line()
        if not greeting.startswith(b"* OK"):
            raise ProtocolError("(greeting)", greeting.decode("utf-8", "replace"))
        self.exists = -1

    def command(self, cmd: str, keep: bool = False, ok: bool = True) -> Response:
        self.n += 1
        tag = b"Zq%d" % self.n
        start = self.w.received - (len(self.w.buf) - self.w.pos)
        self.w.send(tag + b" " + cmd.encode() + CRLF)
        resp = self._read(tag, keep)
        resp.wire_bytes = self.w.received - (len(self.w.buf) - self.w.pos) - start
        if ok and not resp.status[len(tag) + 1 :].startswith(b"OK"):
            raise ProtocolError(cmd, resp.status.decode("utf-8", "replace")[:300])
        return resp

    def _read(self, tag: bytes, keep: bool) -> Response:
        w = self.w
        tagsp = tag + b" "
        nltag = CRLF + tagsp
        resp = Response(b"")
        at_start = True  # pos is at the start of a response line
        cur: list[bytes] = []  # pieces of the current line, when kept
        while True:
            buf = w.buf
            pos = w.pos
            if at_start and not keep:
                # fast path: the complete lines buffered, if none is tagged or ends in a literal
                last = buf.rfind(CRLF, pos)
                if last >= pos:
                    end = last + 2
                    if (
                        buf.find(b"}\r\n", pos, end) < 0
                        and not buf.startswith(tagsp, pos)
                        and buf.find(nltag, pos, end) < 0
                    ):
                        resp.untagged += buf.startswith(b"* ", pos) + buf.count(
                            b"\r\n* ", pos, last
                        )
                        w.pos = end
                        w.fill()
                        continue
            e = buf.find(CRLF, pos)
            if e < 0:
                w.fill()
                continue
            if at_start:
                if buf.startswith(tagsp, pos):
                    resp.status = bytes(buf[pos:e])
                    w.pos = e + 2
                    return resp
                if buf.startswith(b"* ", pos):
                    resp.untagged += 1
            if e > pos and buf[e - 1] == 0x7D:  # "}": a literal follows
                j = buf.rfind(b"{", pos, e)
                n = int(buf[j + 1 : e - 1].rstrip(b"+"))
                if keep:
                    cur.append(bytes(buf[pos : e + 2]))
                w.pos = e + 2
                resp.literal_bytes += n
                w.skip(n)
                at_start = False
                continue
            if keep:
                cur.append(bytes(buf[pos:e]))
                resp.lines.append(b"".join(cur))
                cur = []
            w.pos = e + 2
            at_start = True

    def login(self, user: str, password: str) -> None:
        self.command(f'LOGIN "{user}" "{password}"')

    def select(self, mailbox: str = "INBOX") -> Response:
        r = self.command(f"SELECT {mailbox}", keep=True)
        for line in r.lines:
            parts = line.split()
            if len(parts) == 3 and parts[2].upper() == b"EXISTS":
                self.exists = int(parts[1])
        return r

    def logout(self) -> None:
        try:
            self.command("LOGOUT")
        finally:
            self.w.close()


class Pop3:
    def __init__(self, host: str, port: int, tls: bool = True, timeout: float = 120.0) -> None:
        self.w = Wire(host, port, tls, timeout)
        greeting = self.w.line()
        if not greeting.startswith(b"+OK"):
            raise ProtocolError("(greeting)", greeting.decode("utf-8", "replace"))

    def command(self, cmd: str, multiline: bool = False) -> Response:
        self.w.send(cmd.encode() + CRLF)
        status = self.w.line()
        if not status.startswith(b"+OK"):
            shown = cmd if not cmd.upper().startswith("PASS") else "PASS ***"
            raise ProtocolError(shown, status.decode("utf-8", "replace")[:300])
        resp = Response(status)
        if multiline:
            w = self.w
            start = w.pos - 2  # the CRLF ending the status line
            e = w.buf.find(b"\r\n.\r\n", start)
            while e < 0:
                keep_from = max(start, len(w.buf) - 4)
                consumed = keep_from - start
                w.pos = keep_from
                resp.literal_bytes += consumed
                w.fill()
                start = w.pos
                e = w.buf.find(b"\r\n.\r\n", start)
            resp.literal_bytes += e - start
            w.pos = e + 5
        return resp

    def login(self, user: str, password: str) -> None:
        self.command(f"USER {user}")
        self.command(f"PASS {password}")

    def quit(self) -> None:
        try:
            self.command("QUIT")
        finally:
            self.w.close()


# ---------------------------------------------------------------- helpers


def password_for(user: str, args: argparse.Namespace) -> str:
    if args.password:
        return str(args.password)
    return str(args.password_prefix) + user.split("@", 1)[0]


def connect_imap(args: argparse.Namespace, user: str) -> Imap:
    c = Imap(args.host, args.port, tls=args.tls, timeout=args.timeout)
    c.login(user, password_for(user, args))
    return c


def cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def summary(times: list[float]) -> dict[str, float]:
    return {
        "best_ms": round(min(times) * 1000, 2),
        "median_ms": round(statistics.median(times) * 1000, 2),
        "runs_ms": [round(t * 1000, 2) for t in times],  # type: ignore[dict-item]
    }


def base_result(args: argparse.Namespace, test: str) -> dict[str, Any]:
    return {
        "test": test,
        "label": args.label,
        "host": args.host,
        "port": args.port,
        "tls": args.tls,
    }


# ---------------------------------------------------------------- single-session tests


def run_select(args: argparse.Namespace) -> dict[str, Any]:
    res = base_result(args, "select")
    times: list[float] = []
    for i in range(args.warmup + args.repeat):
        c = connect_imap(args, args.user)
        t = time.perf_counter()
        c.select(args.mailbox)
        took = time.perf_counter() - t
        c.logout()
        if i >= args.warmup:
            times.append(took)
    res.update(user=args.user, messages=c.exists, **summary(times))
    return res


def run_fetch_meta(args: argparse.Namespace) -> dict[str, Any]:
    res = base_result(args, "fetch-meta")
    times: list[float] = []
    errors: list[str] = []
    wire = 0
    for i in range(args.warmup + args.repeat):
        c = connect_imap(args, args.user)
        c.select(args.mailbox)
        cmd = "UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)"
        t = time.perf_counter()
        r = c.command(cmd)
        took = time.perf_counter() - t
        c.logout()
        if r.untagged < c.exists:
            errors.append(f"{cmd}: {r.untagged} untagged responses for {c.exists} messages")
        wire = r.wire_bytes
        if i >= args.warmup:
            times.append(took)
    res.update(user=args.user, messages=c.exists, response_bytes=wire, **summary(times))
    if errors:
        res["errors"] = errors[:5]
    return res


def run_fetch_body(args: argparse.Namespace) -> dict[str, Any]:
    res = base_result(args, "fetch-body")
    c = connect_imap(args, args.user)
    c.select(args.mailbox)
    exists = c.exists
    count = min(args.count, exists)
    rates: list[float] = []
    errors: list[str] = []
    total = 0
    for i in range(args.warmup + args.repeat):
        first = (i * count) % max(1, exists - count + 1) + 1
        cmd = f"FETCH {first}:{first + count - 1} BODY.PEEK[]"
        t = time.perf_counter()
        r = c.command(cmd)
        took = time.perf_counter() - t
        if r.untagged < count:
            errors.append(f"{cmd}: {r.untagged} FETCH responses, expected {count}")
        if i >= args.warmup:
            rates.append(r.literal_bytes / took / 1e6)
            total = r.literal_bytes
    c.logout()
    res.update(
        user=args.user,
        messages=exists,
        fetched=count,
        literal_bytes=total,
        mb_per_s=round(max(rates), 1),
        median_mb_per_s=round(statistics.median(rates), 1),
        runs_mb_per_s=[round(x, 1) for x in rates],
    )
    if errors:
        res["errors"] = errors[:5]
    return res


# ---------------------------------------------------------------- multi-client loops


def imap_triple(c: Imap, rng: random.Random, headers: int) -> int:
    """SELECT INBOX + FETCH `headers` headers + FETCH one body; returns literal octets."""
    c.select()
    n = c.exists
    if n < 1:
        raise ProtocolError("SELECT INBOX", f"mailbox is empty ({n} messages)")
    h = min(headers, n)
    first = rng.randint(1, n - h + 1)
    cmd = f"FETCH {first}:{first + h - 1} (UID BODY.PEEK[HEADER])"
    r1 = c.command(cmd)
    if r1.untagged < h:
        raise ProtocolError(cmd, f"{r1.untagged} FETCH responses, expected {h}")
    k = rng.randint(1, n)
    r2 = c.command(f"FETCH {k} BODY.PEEK[]")
    if r2.literal_bytes <= 0:
        raise ProtocolError(f"FETCH {k} BODY.PEEK[]", "no body literal")
    return r1.literal_bytes + r2.literal_bytes


def worker(
    kind: str,
    args: argparse.Namespace,
    index: int,
    barrier: Any,
    conn: multiprocessing.connection.Connection,
) -> None:
    user = args.user_format.format(i=index + 1)
    password = password_for(user, args)
    rng = random.Random(index)
    ops = 0
    octets = 0
    lat: list[float] = []
    error = ""
    c: Any = None
    try:
        if kind == "session-ops":
            c = connect_imap(args, user)
        elif kind == "pop3-retr":
            c = Pop3(args.host, args.port, tls=args.tls, timeout=args.timeout)
            c.login(user, password)
            stat = c.command("STAT").status.split()
            nmsg = int(stat[1])
            if nmsg < 1:
                raise ProtocolError("STAT", stat[0].decode() + " (empty maildrop)")
    except Exception as exc:  # reported, not retried
        error = describe(exc)
    barrier.wait()
    start = time.monotonic()
    end = start + args.duration
    try:
        if error:
            raise RuntimeError(error)
        if kind == "session-ops":
            while True:
                t = time.monotonic()
                if t >= end:
                    break
                got = imap_triple(c, rng, args.headers)
                now = time.monotonic()
                if now <= end:  # count only what completed inside the window
                    ops += 1
                    octets += got
                    lat.append(now - t)
            c.logout()
        elif kind == "login-loop":
            while True:
                t = time.monotonic()
                if t >= end:
                    break
                c = Imap(args.host, args.port, tls=args.tls, timeout=args.timeout)
                c.login(user, password)
                got = imap_triple(c, rng, args.headers)
                c.logout()
                c = None
                now = time.monotonic()
                if now <= end:
                    ops += 1
                    octets += got
                    lat.append(now - t)
        elif kind == "pop3-retr":
            k = rng.randint(1, nmsg)
            while True:
                t = time.monotonic()
                if t >= end:
                    break
                r = c.command(f"RETR {k}", multiline=True)
                now = time.monotonic()
                if now <= end:
                    ops += 1
                    octets += r.literal_bytes
                    lat.append(now - t)
                k = k % nmsg + 1
            c.quit()
    except Exception as exc:
        error = error or describe(exc)
    finished = time.monotonic()
    conn.send(
        {
            "ops": ops,
            "octets": octets,
            "lat": lat,
            "error": error,
            "user": user,
            "overrun_s": max(0.0, finished - end),
        }
    )
    conn.close()


def describe(exc: BaseException) -> str:
    if isinstance(exc, ProtocolError):
        return f"{exc.command} -> {exc.response}"
    return f"{type(exc).__name__}: {exc}"


def run_loop(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    res = base_result(args, kind)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(args.clients + 1)
    procs = []
    pipes = []
    for i in range(args.clients):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=worker, args=(kind, args, i, barrier, w), daemon=True)
        p.start()
        w.close()
        procs.append(p)
        pipes.append(r)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    barrier.wait(timeout=args.timeout + 60)
    busy0, total0 = cpu_busy()
    t0 = time.monotonic()
    results = [r.recv() for r in pipes]
    wall = time.monotonic() - t0
    busy1, total1 = cpu_busy()
    for p in procs:
        p.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    ops = sum(x["ops"] for x in results)
    lat = sorted(v for x in results for v in x["lat"])
    errors = [f"{x['user']}: {x['error']}" for x in results if x["error"]]
    res.update(
        clients=args.clients,
        duration_s=args.duration,
        ops=ops,
        ops_per_s=round(ops / args.duration, 1),
        mb_per_s=round(sum(x["octets"] for x in results) / args.duration / 1e6, 1),
        p50_ms=round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        p99_ms=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else None,
        per_client_ops=[x["ops"] for x in results],
        wall_s=round(wall, 2),
        client_cpu_cores=round(cpu / max(wall, args.duration), 2),
        machine_busy_pct=round(100.0 * (busy1 - busy0) / max(1, total1 - total0), 1),
    )
    if kind != "pop3-retr":
        h = args.headers
        res["op"] = f"SELECT INBOX + FETCH {h} (UID BODY.PEEK[HEADER]) + FETCH 1 BODY.PEEK[]"
        if kind == "login-loop":
            res["op"] = "connect + TLS + LOGIN + " + res["op"] + " + LOGOUT"
    else:
        res["op"] = "RETR"
        res["messages_per_s"] = res["ops_per_s"]
    if errors:
        res["errors"] = errors
    return res


# ---------------------------------------------------------------- idle connections


def proc_comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    res = base_result(args, "idle")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.connections + 64, hard), hard))
    names = set(args.process_names.split(",")) if args.process_names else set()

    def measured() -> tuple[int, dict[str, int], int]:
        """(PSS sum kB, count by process name, pids) of what we measure."""
        roots: list[int] = list(args.pid or [])
        if args.pid_file:
            with open(args.pid_file) as f:
                roots.append(int(f.read().split()[0]))
        pids = set(roots if not names else [])
        for r in roots:
            for ch in children(r):
                if names:
                    if proc_comm(ch) in names:
                        pids.add(ch)
                elif args.include_children:
                    pids.add(ch)
        by: dict[str, int] = {}
        for p in pids:
            by[proc_comm(p)] = by.get(proc_comm(p), 0) + 1
        return sum(pss_kb(p) for p in pids), by, len(pids)

    def open_idle(user: str) -> Imap:
        c = connect_imap(args, user)
        c.select()
        c.n += 1
        c.w.send(b"Zq%d IDLE\r\n" % c.n)
        line = c.w.line()
        while line.startswith(b"* "):
            line = c.w.line()
        if not line.startswith(b"+"):
            raise ProtocolError("IDLE", line.decode("utf-8", "replace"))
        return c

    def close_all(conns: list[Imap]) -> None:
        for c in conns:
            try:
                c.w.send(b"DONE\r\n")
                c.logout()
            except Exception:  # closing; the measurement is done
                c.w.close()

    errors: list[str] = []
    # a few connections first, closed again, so one-time costs (code paths, caches)
    # are not charged to the measured connections
    warm = [open_idle(args.user_format.format(i=i % args.users + 1)) for i in range(args.warmup)]
    close_all(warm)
    time.sleep(args.settle if args.warmup else 0)
    before, by0, _ = measured()
    conns: list[Imap] = []
    t = time.monotonic()
    for i in range(args.connections):
        user = args.user_format.format(i=i % args.users + 1)
        try:
            conns.append(open_idle(user))
        except Exception as exc:
            errors.append(f"{user}: {describe(exc)}")
            if len(errors) >= 5:
                break
    opened = time.monotonic() - t
    time.sleep(args.settle)
    after, by1, nproc = measured()
    close_all(conns)
    n = max(1, len(conns))
    res.update(
        connections=len(conns),
        open_s=round(opened, 1),
        pss_before_kb=before,
        pss_after_kb=after,
        pss_growth_per_conn_kb=round((after - before) / n, 1),
        processes_before=by0,
        processes_after=by1,
    )
    if names:
        # process per connection (Dovecot): everything the connections' processes hold
        res["pss_per_conn_kb"] = round(after / n, 1)
        res["measured"] = f"sum of PSS of {sorted(names)} children / connections"
    else:
        res["pss_per_conn_kb"] = res["pss_growth_per_conn_kb"]
        res["measured"] = "growth of the server's PSS (incl. children) / connections"
    res["processes_measured"] = nproc
    if errors:
        res["errors"] = errors
    return res


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True)
        p.add_argument("--password", help="default: --password-prefix + local part of the user")
        p.add_argument("--password-prefix", default="bench-password-")
        p.add_argument("--timeout", type=float, default=300.0)
        p.add_argument("--label", default="server")
        p.add_argument("--out", help="also write the JSON to this file")

    def single(p: argparse.ArgumentParser) -> None:
        p.add_argument("--user", required=True, help="e.g. mbox10000@bench.test")
        p.add_argument("--mailbox", default="INBOX")
        p.add_argument("--repeat", type=int, default=5)
        p.add_argument("--warmup", type=int, default=1, help="untimed first runs")

    def multi(p: argparse.ArgumentParser) -> None:
        p.add_argument("--clients", type=int, default=20)
        p.add_argument("--duration", type=float, default=30.0)
        p.add_argument("--user-format", default="u{i}@bench.test", help="{i} = 1..clients")

    for name in ("select", "fetch-meta", "fetch-body"):
        p = sub.add_parser(name)
        common(p)
        single(p)
        if name == "fetch-body":
            p.add_argument("--count", type=int, default=1000, help="messages per FETCH")
    for name in ("session-ops", "login-loop"):
        p = sub.add_parser(name)
        common(p)
        multi(p)
        p.add_argument("--headers", type=int, default=50)
    p = sub.add_parser("pop3-retr")
    common(p)
    multi(p)
    p = sub.add_parser("idle")
    common(p)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--users", type=int, default=20, help="connections spread over u1..uN")
    p.add_argument("--user-format", default="u{i}@bench.test")
    p.add_argument("--pid", type=int, action="append", help="server pid (repeatable)")
    p.add_argument("--pid-file", help="file holding the server pid")
    p.add_argument("--include-children", action="store_true")
    p.add_argument(
        "--process-names",
        help="per-connection processes among the server pid's descendants, "
        "e.g. imap,imap-login (Dovecot): PSS per connection = their sum / N",
    )
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=5, help="connections opened and closed first")

    args = ap.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        ap.error("only loopback hosts are allowed")
    runners: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "select": run_select,
        "fetch-meta": run_fetch_meta,
        "fetch-body": run_fetch_body,
        "session-ops": lambda a: run_loop(a, "session-ops"),
        "login-loop": lambda a: run_loop(a, "login-loop"),
        "pop3-retr": lambda a: run_loop(a, "pop3-retr"),
        "idle": run_idle,
    }
    try:
        result = runners[args.cmd](args)
    except (ProtocolError, OSError) as exc:
        result = base_result(args, args.cmd)
        result["errors"] = [describe(exc)]
    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 1 if result.get("errors") and not result.get("ops", result.get("best_ms")) else 0


if __name__ == "__main__":
    sys.exit(main())
