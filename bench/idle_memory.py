#!/usr/bin/env python3
"""Memory per idle SMTP connection, as PSS from /proc/<pid>/smaps_rollup.

Opens ``--connections`` SMTP connections, says EHLO on each and leaves them idle,
then measures the server's PSS:

* one-process servers (postwerk): ``--pid PID`` (or ``--pid-file``); reports
  (PSS after - PSS before) / N, i.e. the growth per connection.  Child processes
  are included with ``--include-children``.
* process-per-connection servers (Postfix): ``--pids-cmd CMD`` printing the pids
  of the per-connection processes (``bench/peers/postfix_dovecot.sh smtpd-pids``)
  or ``--process-name smtpd``; reports sum(PSS of those processes) / N after the
  connections are open (and the growth per connection, for comparison).

Needs root (or the same uid as the server) to read smaps_rollup.  Connections
go to 127.0.0.1 only; they are closed (QUIT) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time


def pss_kb(pid: int) -> int:
    """PSS of one process in kB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except FileNotFoundError:
        pass
    for c in list(out):
        out.extend(children(c))
    return out


def pids_by_name(name: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == name:
                        pids.append(int(d))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return pids


def _socket_inodes_for_peers(server_port: int, client_ports: set[int]) -> set[str]:
    """Inodes of the server-side sockets of our connections (from /proc/net/tcp*)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    lport = int(parts[1].rsplit(":", 1)[1], 16)
                    rport = int(parts[2].rsplit(":", 1)[1], 16)
                    if lport == server_port and rport in client_ports:
                        inodes.add(parts[9])
        except FileNotFoundError:
            pass
    return inodes


def pids_holding(pids: list[int], inodes: set[str]) -> list[int]:
    """The subset of ``pids`` that hold one of the socket ``inodes``."""
    out = []
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    out.append(pid)
                    break
        except (FileNotFoundError, PermissionError):
            pass
    return out


def read_reply(sock_file) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    lines = []
    while True:
        line = sock_file.readline()
        if not line:
            raise ConnectionError("closed by server")
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(lines[-1][:3]), lines


def open_idle(host: str, port: int, n: int, timeout: float) -> list[tuple[socket.socket, object]]:
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=timeout)
        f = s.makefile("rb")
        code, lines = read_reply(f)
        if code != 220:
            raise RuntimeError(f"greeting: {lines}")
        s.sendall(b"EHLO idle.client.bench.test\r\n")
        code, lines = read_reply(f)
        if code != 250:
            raise RuntimeError(f"EHLO: {lines}")
        conns.append((s, f))
    return conns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--pid", type=int, action="append", help="server pid (repeatable)")
    ap.add_argument("--pid-file", help="file holding the server pid (e.g. DATA/postwerk.pid)")
    ap.add_argument("--include-children", action="store_true")
    ap.add_argument("--pids-cmd", help="shell command printing per-connection process pids")
    ap.add_argument("--process-name", help="per-connection processes by /proc/PID/comm, e.g. smtpd")
    ap.add_argument(
        "--match-connections",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count only per-connection processes holding one of our sockets (default on)",
    )
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before measuring")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--label", default="server")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        ap.error("only loopback hosts are allowed")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    server_pids: list[int] = list(args.pid or [])
    if args.pid_file:
        with open(args.pid_file) as f:
            server_pids.append(int(f.read().split()[0]))

    def per_conn_pids() -> list[int]:
        if args.pids_cmd:
            out = subprocess.run(args.pids_cmd, shell=True, capture_output=True, text=True)
            return [int(x) for x in out.stdout.split()]
        if args.process_name:
            return pids_by_name(args.process_name)
        return []

    def server_set() -> list[int]:
        pids = list(server_pids)
        if args.include_children:
            for p in server_pids:
                pids.extend(children(p))
        return sorted(set(pids))

    if not server_pids and not (args.pids_cmd or args.process_name):
        ap.error("give --pid/--pid-file or --pids-cmd/--process-name")

    before_server = sum(pss_kb(p) for p in server_set())
    before_pc_pids = per_conn_pids()
    before_pc = sum(pss_kb(p) for p in before_pc_pids)

    conns = open_idle(args.host, args.port, args.connections, args.timeout)
    time.sleep(args.settle)
    after_server = sum(pss_kb(p) for p in server_set())
    all_pc_pids = per_conn_pids()
    # only the per-connection processes that serve one of *our* connections
    # (Postfix keeps idle smtpd processes around for max_idle seconds)
    client_ports = {s.getsockname()[1] for s, _ in conns}
    inodes = _socket_inodes_for_peers(args.port, client_ports)
    after_pc_pids = pids_holding(all_pc_pids, inodes) if args.match_connections else all_pc_pids
    after_pc = sum(pss_kb(p) for p in after_pc_pids)
    serving = len(pids_holding(all_pc_pids, inodes))

    for s, _f in conns:
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
    for s, f in conns:
        try:
            f.close()  # type: ignore[attr-defined]
            s.close()
        except OSError:
            pass

    n = args.connections
    result: dict[str, object] = {"label": args.label, "connections": n}
    if server_pids:
        result.update(
            server_pss_before_kb=before_server,
            server_pss_after_kb=after_server,
            pss_growth_per_conn_kb=round((after_server - before_server) / n, 1),
        )
        result["pss_per_conn_kb"] = result["pss_growth_per_conn_kb"]
    if args.pids_cmd or args.process_name:
        result.update(
            per_conn_processes_before=len(before_pc_pids),
            per_conn_processes_after=len(all_pc_pids),
            per_conn_processes_serving_us=serving,
            per_conn_pss_sum_before_kb=before_pc,
            per_conn_pss_sum_after_kb=after_pc,
            pss_sum_per_conn_kb=round(after_pc / n, 1),
            pss_growth_per_conn_kb=round((after_pc - before_pc) / n, 1),
        )
        result["pss_per_conn_kb"] = result["pss_sum_per_conn_kb"]
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.label}: {n} idle connections, PSS per connection "
            f"{result['pss_per_conn_kb']} kB "
            + (
                f"(sum over the {len(after_pc_pids)} processes serving them / {n}; "
                f"growth {result['pss_growth_per_conn_kb']} kB/conn)"
                if args.pids_cmd or args.process_name
                else f"(server PSS {before_server} -> {after_server} kB)"
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
