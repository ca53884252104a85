"""API keys for the scoring routes (`X-API-Key`): generation, hashing, lookup with a short cache.

Only the sha256 digest of a key is stored. Lookup is by digest, so no comparison ever touches
the key's characters (timing reveals nothing an attacker can use: they do not control the
digest). Valid keys are cached for `key_cache_seconds`, so a revocation takes effect within that
delay; unknown keys are never cached (a flood of random keys cannot grow the cache).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from api.actions import store
from api.actions.store import Principal

TIER_TAGS = {"starter": "sta", "pro": "pro", "enterprise": "ent"}
PREFIX_LEN = 12  # "sk-ent-1a2b3" ... enough to recognise a key in a list, useless to an attacker


def hash_key(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def generate_key(tier: str) -> str:
    """A new key, ``sk-<tier>-<40 hex>`` (160 random bits)."""
    return f"sk-{TIER_TAGS[tier]}-{secrets.token_hex(20)}"


class KeyAuthenticator:
    """Resolves a presented key to a `Principal`, caching valid ones briefly."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    async def authenticate(self, pool: AsyncConnectionPool[Any], key: str) -> Principal | None:
        """The principal of a live key, or None for a wrong or revoked one."""
        digest = hash_key(key)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with pool.connection() as conn:
            principal = await store.principal_for_hash(conn, digest)
        if principal is None:
            self._cache.pop(digest, None)
        elif self._ttl > 0:
            if len(self._cache) > 10_000:  # bounded: drop everything, it refills on demand
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        return principal
