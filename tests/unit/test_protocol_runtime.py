"""ProtocolRuntime: listeners follow the stored switch; bad settings and busy ports
are reported and retried, never fatal; a settings change that keeps the ports does
not reopen the listeners."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from postwerk.roles.protocol_listeners import ProtocolRuntime
from postwerk.services.pop3 import Pop3Settings
from postwerk.store.records import ProtocolSettings


@dataclass
class FakeContext:
    settings: Any = None
    tls_context: Any = "tls"


@dataclass
class FakeListener:
    port: int
    implicit_tls: bool
    busy: set[int]
    events: list[str]
    started: bool = False

    async def start(self) -> None:
        if self.port in self.busy:
            raise OSError(98, "Address already in use")
        self.started = True
        self.events.append(f"start {self.port}")

    async def stop(self, grace_seconds: float = 5.0) -> None:
        self.events.append(f"stop {self.port}")

    @property
    def bound_port(self) -> int:
        return self.port


@dataclass
class Harness:
    busy: set[int] = field(default_factory=set)
    events: list[str] = field(default_factory=list)

    def runtime(self) -> ProtocolRuntime:
        def make(ctx: Any, host: str | None, port: int, tls: bool) -> FakeListener:
            return FakeListener(port, tls, self.busy, self.events)

        async def never(protocol: str) -> ProtocolSettings | None:
            return None

        return ProtocolRuntime(
            "pop3", FakeContext(), never, make, Pop3Settings.from_mapping,
            host=None, port_offset=10000,
        )  # fmt: skip


def pop(enabled: bool, **settings: Any) -> ProtocolSettings:
    return ProtocolSettings("pop3", enabled, settings)


async def test_switch_on_change_settings_switch_off() -> None:
    h = Harness()
    rt = h.runtime()
    await rt.reconcile(None)  # never configured: off
    assert rt.bound_ports == {} and h.events == []
    await rt.reconcile(pop(True))
    assert rt.bound_ports == {110: 10110, 995: 10995}
    await rt.reconcile(pop(True, banner="Hello"))  # same ports: no reopen
    assert rt.ctx.settings.banner == "Hello"
    assert h.events == ["start 10110", "start 10995"]
    await rt.reconcile(pop(True, port=2110))  # a port change reopens
    assert rt.bound_ports == {2110: 12110, 995: 10995}
    await rt.reconcile(pop(False))
    assert rt.bound_ports == {}
    assert h.events[-2:] == ["stop 12110", "stop 10995"]


async def test_invalid_settings_keep_what_runs() -> None:
    h = Harness()
    rt = h.runtime()
    await rt.reconcile(pop(True))
    await rt.reconcile(pop(True, idle_timeout_after_login=5))  # refused: RFC 1939 minimum
    assert rt.bound_ports == {110: 10110, 995: 10995}
    assert rt.ctx.settings.idle_timeout_after_login == 1800


async def test_busy_port_is_retried_at_the_next_poll() -> None:
    h = Harness(busy={10995})
    rt = h.runtime()
    await rt.reconcile(pop(True))
    assert rt.bound_ports == {}  # all or nothing: 110 was closed again
    assert h.events == ["start 10110", "stop 10110"]
    h.busy.clear()
    await rt.reconcile(pop(True))
    assert rt.bound_ports == {110: 10110, 995: 10995}


async def test_no_tls_context_no_implicit_tls_port() -> None:
    h = Harness()
    rt = h.runtime()
    rt.ctx.tls_context = None
    await rt.reconcile(pop(True))
    assert rt.bound_ports == {110: 10110}
