"""Password hashing and the login throttle."""

from __future__ import annotations

import pytest

from postwerk.directory.passwords import (
    DEFAULT_MEMORY_KIB,
    DEFAULT_PARALLELISM,
    DEFAULT_TIME_COST,
    LoginThrottle,
    PasswordHasher,
    ThrottlePolicy,
)


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher.cheap()


# ---------------------------------------------------------------- hashing


def test_hash_is_argon2id_and_salted(hasher: PasswordHasher) -> None:
    a, b = hasher.hash("pw"), hasher.hash("pw")
    assert a.startswith("$argon2id$")
    assert a != b


async def test_verify_match_and_mismatch(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse")
    assert await hasher.verify(stored, "correct horse")
    assert not await hasher.verify(stored, "correct horsf")
    assert not await hasher.verify(stored, "")


async def test_verify_unicode(hasher: PasswordHasher) -> None:
    stored = hasher.hash("pässwörd 🔑")
    assert await hasher.verify(stored, "pässwörd 🔑")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "plaintext",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$garbage",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAA\x00",
    ],
)
async def test_verify_malformed_hash_is_false(hasher: PasswordHasher, bad: str) -> None:
    assert not await hasher.verify(bad, "pw")
    assert hasher.needs_rehash(bad)


async def test_verify_unknown_account_is_false(hasher: PasswordHasher) -> None:
    assert not await hasher.verify(None, "postwerk-timing-equaliser")
    assert not hasher.verify_sync(None, "anything")


def test_needs_rehash(hasher: PasswordHasher) -> None:
    strong = PasswordHasher(time_cost=2, memory_cost=1024)
    assert not hasher.needs_rehash(hasher.hash("pw"))
    assert hasher.needs_rehash(strong.hash("pw"))
    assert strong.needs_rehash(hasher.hash("pw"))


async def test_hash_from_other_parameters_still_verifies(hasher: PasswordHasher) -> None:
    # Parameters live in the PHC string, so raising them later keeps old logins working.
    old = PasswordHasher(time_cost=2, memory_cost=1024).hash("pw")
    assert await hasher.verify(old, "pw")


def test_default_parameters() -> None:
    assert (DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST, DEFAULT_PARALLELISM) == (19456, 3, 1)
    assert PasswordHasher.cheap().parameters == (8, 1, 1)


# ---------------------------------------------------------------- throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: float) -> tuple[LoginThrottle, FakeClock]:
    clock = FakeClock()
    policy = ThrottlePolicy(**kw)  # type: ignore[arg-type]
    return LoginThrottle(clock, policy), clock


def test_defaults_documented() -> None:
    p = ThrottlePolicy()
    assert (p.window, p.tarpit, p.ip_limit, p.account_limit) == (600.0, 5.0, 30, 10)


def test_no_failures_no_delay() -> None:
    t, _ = make()
    assert t.delay_for("192.0.2.1", "alice") == 0.0
    assert not t.locked_out("192.0.2.1", "alice")


def test_tarpit_after_failure_then_expires() -> None:
    t, clock = make(window=60, tarpit=5)
    t.record_failure("192.0.2.1", "alice")
    assert t.delay_for("192.0.2.1", "alice") == 5.0
    assert t.delay_for("192.0.2.1", None) == 5.0  # by address
    assert t.delay_for("198.51.100.7", "ALICE") == 5.0  # by account, case-insensitive
    assert t.delay_for("198.51.100.7", "bob") == 0.0
    clock.now += 61
    assert t.delay_for("192.0.2.1", "alice") == 0.0


def test_account_lockout_and_sliding_window() -> None:
    t, clock = make(window=100, account_limit=3, ip_limit=1000)
    for i in range(3):
        assert not t.locked_out(f"192.0.2.{i}", "alice")
        t.record_failure(f"192.0.2.{i}", "alice")
        clock.now += 10
    # three failures from three addresses: the account is locked everywhere
    assert t.locked_out("203.0.113.9", "alice")
    assert not t.locked_out("203.0.113.9", "bob")
    assert t.failures("203.0.113.9", "alice") == (0, 3)
    clock.now = 1000 + 101  # the first failure (t=1000) slid out
    assert not t.locked_out("203.0.113.9", "alice")
    assert t.failures("203.0.113.9", "alice") == (0, 2)


def test_ip_lockout_spray_many_accounts() -> None:
    t, _ = make(ip_limit=5, account_limit=100)
    for i in range(5):
        t.record_failure("192.0.2.1", f"user{i}")
    assert t.locked_out("192.0.2.1", "someone-else")
    assert not t.locked_out("192.0.2.2", "someone-else")


def test_success_clears_account_not_address() -> None:
    t, _ = make(ip_limit=3, account_limit=3)
    for _ in range(3):
        t.record_failure("192.0.2.1", "alice")
    t.record_success("192.0.2.1", "alice")
    assert t.failures("192.0.2.1", "alice") == (3, 0)
    assert t.locked_out("192.0.2.1", "alice")  # the address is still locked
    assert not t.locked_out("192.0.2.2", "alice")


def test_ipv6_grouped_by_64_and_mapped_v4() -> None:
    t, _ = make(ip_limit=2)
    t.record_failure("2001:db8:1:2::1", None)
    t.record_failure("2001:db8:1:2:ffff::9", None)
    assert t.locked_out("2001:db8:1:2::abcd", None)
    assert not t.locked_out("2001:db8:1:3::1", None)
    t.record_failure("::ffff:192.0.2.5", None)
    t.record_failure("192.0.2.5", None)
    assert t.locked_out("192.0.2.5", None)


def test_non_address_key_used_as_given() -> None:
    t, _ = make(ip_limit=1)
    t.record_failure("unix-socket", None)
    assert t.locked_out("unix-socket", None)


def test_memory_bounded_evicts_least_recent() -> None:
    t, _ = make(max_entries=3, ip_limit=1, account_limit=1)
    for i in range(10):
        t.record_failure(f"192.0.2.{i}", f"user{i}")
    assert len(t._by_ip) == 3 and len(t._by_account) == 3
    assert t.locked_out("192.0.2.9", None)
    assert not t.locked_out("192.0.2.0", None)  # evicted
    assert t.locked_out("192.0.2.0", "user8")


def test_expired_entries_are_freed() -> None:
    t, clock = make(window=10)
    t.record_failure("192.0.2.1", "alice")
    clock.now += 11
    assert t.failures("192.0.2.1", "alice") == (0, 0)
    assert not t._by_ip and not t._by_account
