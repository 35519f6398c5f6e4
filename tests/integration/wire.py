"""A raw-socket SMTP client shared by the integration tests (no test functions here)."""

from __future__ import annotations

import base64
import socket
import ssl


class Wire:
    """A line-oriented raw SMTP client: send bytes, read whole replies.

    `source` binds the client end to a loopback address such as 127.0.0.2, so a test can
    be "another client" for connector selection, per-source limits and the login throttle.
    """

    def __init__(self, port: int, source: str | None = None, timeout: float = 10) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port),
            timeout=timeout,
            source_address=(source, 0) if source is not None else None,
        )
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, bytes]:
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(b"".join(lines) + self.buf)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] == b" ":
                return int(line[:3]), b"\n".join(lines)

    def cmd(self, line: bytes) -> tuple[int, bytes]:
        self.send(line + b"\r\n")
        return self.reply()

    def starttls(self, ctx: ssl.SSLContext) -> None:
        """STARTTLS, the handshake, and a fresh EHLO (RFC 3207 §4.2 forgets the old one)."""
        code, text = self.cmd(b"STARTTLS")
        assert code == 220, text
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mail.example.test")
        code, text = self.cmd(b"EHLO wire.test")
        assert code == 250, text

    def auth_plain(self, user: str, password: str) -> tuple[int, bytes]:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        return self.cmd(f"AUTH PLAIN {token}".encode())

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()
