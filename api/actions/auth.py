"""API keys for the scoring routes (`X-API-Key`): lookup with a short cache.

Keys are made, listed and revoked in `api/keys.py`; only the sha256 digest of a key is stored.
Lookup is by digest, so no comparison ever touches the key's characters (timing reveals nothing
an attacker can use: they do not control the digest). Valid keys are cached for
`key_cache_seconds` (`GOVRIX_APIKEY_CACHE_SECONDS`, default 5), so a revocation made elsewhere
takes effect within that delay; `DELETE /api/v1/keys/{id}` also calls `forget`, so in the
process that served it the key is refused at once. Unknown keys are never cached (a flood of
random keys cannot grow the cache).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from api.actions import store
from api.actions.store import Principal
from api.keys import hash_key


class KeyAuthenticator:
    """Resolves a presented key to a `Principal`, caching valid ones briefly."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        # Bumped by `forget`: a lookup that read the database before a revocation committed
        # must not put the revoked key back into the cache after `forget` emptied it.
        self._forgets = 0

    async def authenticate(self, pool: AsyncConnectionPool[Any], key: str) -> Principal | None:
        """The principal of a live key, or None for a wrong or revoked one."""
        digest = hash_key(key)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        forgets = self._forgets
        async with pool.connection() as conn:
            principal = await store.principal_for_hash(conn, digest)
        if principal is None:
            self._cache.pop(digest, None)
        elif self._ttl > 0 and forgets == self._forgets:
            if len(self._cache) > 10_000:  # bounded: drop everything, it refills on demand
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a revoked key from the cache (by id: the key itself is not known then)."""
        self._forgets += 1
        stale = [d for d, (_, p) in self._cache.items() if p.key_id == key_id]
        for digest in stale:
            del self._cache[digest]
