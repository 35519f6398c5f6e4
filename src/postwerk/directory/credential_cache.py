"""Recently verified credentials, so that a client which logs in again and again
(IMAP clients open a connection per check, phones reconnect constantly) does
not pay argon2id's ~30 ms each time.

Purpose: `Directory.authenticate` asks `known(stored_hash, password)` before
verifying, and `remember`s a success. Only successes are kept: a wrong
password always pays the full verification and the login throttle.

Invariants:
- No password is held: an entry's key is HMAC-SHA256 under a random
  per-process secret of (stored hash, password). The stored hash is part of
  the key, so a changed password (a new hash, with a new salt) never matches
  an old entry, even within the TTL; disabling an account is checked by the
  caller on every login, before the cache.
- Entries expire `ttl` seconds after they were verified (default 300 s;
  Dovecot's auth_cache_ttl defaults to an hour); at most `max_entries` are kept
  (oldest evicted first). The clock is injected.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

DEFAULT_TTL: Final = 300.0
DEFAULT_MAX_ENTRIES: Final = 10_000


class CredentialCache:
    def __init__(
        self,
        clock: Callable[[], float],
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._secret = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()  # key -> verified at

    def __len__(self) -> int:
        return len(self._verified)

    def _key(self, stored_hash: str, password: str) -> bytes:
        mac = hmac.new(self._secret, stored_hash.encode(), hashlib.sha256)
        mac.update(b"\0")
        mac.update(password.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def known(self, stored_hash: str, password: str) -> bool:
        """True if this password was verified against this hash within the TTL."""
        if self._ttl <= 0:
            return False
        key = self._key(stored_hash, password)
        when = self._verified.get(key)
        if when is None:
            return False
        if self._clock() - when > self._ttl:
            del self._verified[key]
            return False
        return True

    def remember(self, stored_hash: str, password: str) -> None:
        if self._ttl <= 0:
            return
        key = self._key(stored_hash, password)
        self._verified[key] = self._clock()
        self._verified.move_to_end(key)
        while len(self._verified) > self._max:
            self._verified.popitem(last=False)

    def clear(self) -> None:
        self._verified.clear()
