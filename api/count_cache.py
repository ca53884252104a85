"""``X-Total-Count`` without counting a million rows per request.

Small results are counted exactly on every request (a count capped at ``exact_below + 1`` rows,
sent in the same pipeline as the page). When the cap is reached the set is large: its exact
count is computed once, cached per filter set, and refreshed in the background once it is older
than ``ttl`` seconds; requests in between answer with the cached value. So a total above
``exact_below`` can lag the table by about ``ttl`` seconds plus one count's duration, and no
request waits for a large count except the first one for a filter set (concurrent first requests
share that one count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger("govrix.api.count_cache")


class RefreshingCache:
    """Values per key, computed once for all concurrent callers, refreshed by one background
    task when old; a failed refresh keeps the old value. Shared by :class:`TotalCache` and the
    stats routes' cache (api/stats.py)."""

    def __init__(self) -> None:
        self._values: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _age(self, key: Hashable) -> tuple[Any, float] | None:
        """(value, seconds since computed) of a cached key, or None."""
        hit = self._values.get(key)
        if hit is None:
            return None
        self._values.move_to_end(key)
        return hit[0], time.monotonic() - hit[1]

    def _refresh_later(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> None:
        """Recompute ``key`` in one background task (none when one already runs)."""
        if key in self._inflight:
            return
        task = asyncio.create_task(self._refresh(key, compute))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compute(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        """Compute ``key`` once for all concurrent callers, and remember it."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await compute()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(value)
        self._store(key, value)
        return value

    async def _refresh(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> None:
        try:
            await self._compute(key, compute)
        except Exception as e:  # a failed refresh keeps the old value; the next request retries
            log.warning("background refresh of %r failed: %s", key, e)

    def _store(self, key: Hashable, value: Any) -> None:
        self._values[key] = (value, time.monotonic())
        self._values.move_to_end(key)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class TotalCache(RefreshingCache):
    """Exact counts of large result sets, per filter key, refreshed in the background."""

    def __init__(self, *, exact_below: int = 10_000, ttl: float = 5.0, max_keys: int = 1024):
        super().__init__()
        self.exact_below = exact_below
        self.ttl = ttl
        self.max_keys = max_keys

    def cached(self, key: Hashable, refresh: Callable[[], Awaitable[int]]) -> int | None:
        """The cached total of a large set (refreshing it in the background when old), or None."""
        hit = self._age(key)
        if hit is None:
            return None
        value, age = hit
        if age > self.ttl:
            self._refresh_later(key, refresh)
        return int(value)

    async def large(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> int:
        """Count a set known to be large, once for all concurrent callers, and remember it."""
        return int(await self._compute(key, count))

    def _store(self, key: Hashable, value: Any) -> None:
        super()._store(key, value)
        while len(self._values) > self.max_keys:
            self._values.popitem(last=False)
