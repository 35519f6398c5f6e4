"""The verified-credential cache and its use by Directory.authenticate."""

from __future__ import annotations

import argon2.profiles

from postwerk.directory.credential_cache import CredentialCache
from postwerk.directory.passwords import PasswordHasher
from postwerk.directory.service import Directory
from postwerk.store.memory import MemoryBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        p = argon2.profiles.CHEAPEST
        super().__init__(
            time_cost=p.time_cost, memory_cost=p.memory_cost, parallelism=p.parallelism
        )
        self.verifications = 0

    def verify_sync(self, hash: str | None, password: str) -> bool:
        self.verifications += 1
        return super().verify_sync(hash, password)


def test_known_after_remember_until_the_ttl() -> None:
    clock = Clock()
    cache = CredentialCache(clock, ttl=60)
    assert not cache.known("$h1", "pw")
    cache.remember("$h1", "pw")
    assert cache.known("$h1", "pw")
    assert not cache.known("$h1", "pW")  # another password
    assert not cache.known("$h2", "pw")  # another stored hash: the password changed
    clock.now += 61
    assert not cache.known("$h1", "pw") and len(cache) == 0


def test_bounded_and_off() -> None:
    cache = CredentialCache(Clock(), max_entries=2)
    for n in range(3):
        cache.remember("$h", f"pw{n}")
    assert len(cache) == 2 and not cache.known("$h", "pw0") and cache.known("$h", "pw2")
    off = CredentialCache(Clock(), ttl=0)
    off.remember("$h", "pw")
    assert not off.known("$h", "pw")


def test_no_password_is_kept() -> None:
    cache = CredentialCache(Clock())
    cache.remember("$argon2id$stored", "correct horse battery staple")
    assert all(b"horse" not in key for key in cache._verified)


async def test_directory_verifies_once_then_remembers_and_forgets_on_change() -> None:
    backend = MemoryBackend()
    hasher = CountingHasher()
    clock = Clock()
    directory = Directory(
        backend.directory, backend.mailstore, hasher, credentials=CredentialCache(clock, ttl=60)
    )
    await directory.add_domain("example.test")
    await directory.add_mailbox("alice@example.test", password="s3cret-Passw0rd")
    hasher.verifications = 0
    for _ in range(5):
        assert await directory.authenticate("alice@example.test", "s3cret-Passw0rd")
    assert hasher.verifications == 1
    # Wrong passwords always pay the full check.
    for _ in range(3):
        assert await directory.authenticate("alice@example.test", "wrong") is None
    assert hasher.verifications == 4
    # A new password: the old one no longer logs in, even within the TTL.
    await directory.set_password("alice@example.test", "n3w-Passw0rd!")
    assert await directory.authenticate("alice@example.test", "s3cret-Passw0rd") is None
    assert await directory.authenticate("alice@example.test", "n3w-Passw0rd!")
    clock.now += 61
    before = hasher.verifications
    assert await directory.authenticate("alice@example.test", "n3w-Passw0rd!")
    assert hasher.verifications == before + 1  # expired: verified again
