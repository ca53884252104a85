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

log = logging.getLogger("govrix.api.count_cache")


class TotalCache:
    """Exact counts of large result sets, per filter key, refreshed in the background."""

    def __init__(self, *, exact_below: int = 10_000, ttl: float = 5.0, max_keys: int = 1024):
        self.exact_below = exact_below
        self.ttl = ttl
        self.max_keys = max_keys
        self._values: OrderedDict[Hashable, tuple[int, float]] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Future[int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def cached(self, key: Hashable, refresh: Callable[[], Awaitable[int]]) -> int | None:
        """The cached total of a large set (refreshing it in the background when old), or None."""
        hit = self._values.get(key)
        if hit is None:
            return None
        self._values.move_to_end(key)
        value, at = hit
        if time.monotonic() - at > self.ttl and key not in self._inflight:
            task = asyncio.create_task(self._refresh(key, refresh))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return value

    async def large(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> int:
        """Count a set known to be large, once for all concurrent callers, and remember it."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await count()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(value)
        self._store(key, value)
        return value

    async def _refresh(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> None:
        try:
            await self.large(key, count)
        except Exception as e:  # a failed refresh keeps the old value; the next request retries
            log.warning("background count failed: %s", e)

    def _store(self, key: Hashable, value: int) -> None:
        self._values[key] = (value, time.monotonic())
        self._values.move_to_end(key)
        while len(self._values) > self.max_keys:
            self._values.popitem(last=False)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
