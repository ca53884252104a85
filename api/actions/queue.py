"""The durable scoring queue: background workers that score batch events exactly once.

A worker claims a few `scoring_queue` rows with `FOR UPDATE SKIP LOCKED` (so any number of
workers in any number of API processes share the queue without blocking each other), scores each
event, and inserts its score and deletes its queue row in the same transaction. A crash rolls the
transaction back: the rows unlock and are claimed again, and the scores' primary key makes a
second score impossible anyway. An event whose scoring fails is retried with exponential backoff
and marked 'failed' (kept, with its last error) after `max_attempts`.

Workers sleep until `NOTIFY govrix_scoring` (sent by the batch insert) or `poll_interval`, the
fallback when the listener connection is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.actions import store
from api.actions.config import Settings
from api.scoring import Engine, decode_action_event

log = logging.getLogger("govrix.actions.queue")

_CLAIM = """
SELECT q.customer_id, q.event_id, a.event::text, a.seq, a.received_at
FROM scoring_queue q JOIN actions a USING (customer_id, event_id)
WHERE q.status = 'pending' AND q.available_at <= now()
ORDER BY q.available_at, a.seq
LIMIT %s
FOR UPDATE OF q SKIP LOCKED
"""

_DONE = "DELETE FROM scoring_queue WHERE customer_id = %s AND event_id = %s"

_FAILED = """
UPDATE scoring_queue SET
    attempts = attempts + 1,
    last_error = %(error)s,
    status = CASE WHEN attempts + 1 >= %(max)s THEN 'failed' ELSE 'pending' END,
    available_at = now() + least(%(base)s * power(2, attempts), %(cap)s) * interval '1 second'
WHERE customer_id = %(c)s AND event_id = %(e)s
"""


async def score_claimed(conn: AsyncConnection[Any], engine: Engine, settings: Settings) -> int:
    """Claim up to `worker_batch` ready rows, score them, commit; returns how many were claimed."""
    async with conn.transaction():
        cur = await conn.execute(_CLAIM, (settings.worker_batch,))
        rows = await cur.fetchall()
        scored = 0
        for customer_id, event_id, raw, seq, received_at in rows:
            try:
                async with conn.transaction():  # a savepoint: one bad event spoils nothing else
                    event = decode_action_event(raw.encode())
                    facts = await store.history(
                        conn,
                        customer_id,
                        event,
                        store.Inserted(seq, received_at),
                        baseline_hours=settings.baseline_hours,
                        recent=settings.recent_actions,
                    )
                    result = await engine.score_with_fallback(event, facts, settings.llm)
                    if not await store.insert_score(conn, customer_id, result):
                        # Cannot happen while queue rows are only made for new actions; say so
                        # loudly if it ever does (the stored score is kept, never replaced).
                        log.warning("queued event already had a score; kept the stored one")
                    await conn.execute(_DONE, (customer_id, event_id))
                    scored += 1
            except Exception as exc:
                # The type and message only: engine and DB messages name fields, not values.
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("scoring failed for a queued event: %s", type(exc).__name__)
                await conn.execute(
                    _FAILED,
                    {
                        "error": error,
                        "max": settings.max_attempts,
                        "base": settings.backoff_base,
                        "cap": settings.backoff_max,
                        "c": customer_id,
                        "e": event_id,
                    },
                )
    if scored:
        log.info("scored %d queued events", scored)
    return len(rows)


class QueueWorkers:
    """`workers` claiming tasks plus one LISTEN task; start in the lifespan, stop on shutdown."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        engine: Engine,
        settings: Settings,
    ) -> None:
        self._pool = pool
        self._engine = engine
        self._settings = settings
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None] | None] = set()  # workers inside a claimed batch
        self._listener: asyncio.Task[None] | None = None
        self.scored_batches = 0

    async def start(self) -> None:
        """Start the listener and the workers (returns at once)."""
        if self._settings.workers <= 0:
            return
        self._listener = asyncio.create_task(self._listen(), name="govrix-scoring-listen")
        for i in range(self._settings.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"govrix-scoring-{i}"))

    async def stop(self, grace: float = 5.0) -> None:
        """Let workers finish their current batch (up to `grace` seconds), then cancel them."""
        self._stopping = True
        self._wake.set()
        if self._listener is not None:  # holds no work: no need to wait for its poll to end
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if not self._tasks:
            return
        for task in self._tasks:  # idle (or waiting for a connection): nothing to finish
            if task not in self._busy:
                task.cancel()
        _done, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _work(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()  # a NOTIFY during the claim sets it again
            try:
                async with self._pool.connection() as conn:
                    me = asyncio.current_task()
                    self._busy.add(me)
                    try:
                        claimed = await score_claimed(conn, self._engine, self._settings)
                    finally:
                        self._busy.discard(me)
                failures = 0
            except Exception:
                failures += 1
                log.exception("scoring worker error (attempt %d)", failures)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            if claimed:
                self.scored_batches += 1
                if self._settings.worker_pause:
                    await asyncio.sleep(self._settings.worker_pause)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)

    async def _listen(self) -> None:
        """A dedicated autocommit connection LISTENing; reconnects, polling covers the gaps."""
        conninfo, kwargs = self._pool.conninfo, self._pool.kwargs
        if not isinstance(conninfo, str) or not isinstance(kwargs, dict | None):
            log.info("pool with a conninfo callable: scoring workers poll without LISTEN")
            return
        while not self._stopping:
            try:
                conn = await AsyncConnection.connect(
                    conninfo, **{**(kwargs or {}), "autocommit": True}
                )
                async with conn:
                    await conn.execute("LISTEN govrix_scoring")  # = store.NOTIFY_CHANNEL
                    self._wake.set()  # catch up on anything queued while not listening
                    while not self._stopping:
                        async for _ in conn.notifies(timeout=1.0):
                            self._wake.set()
            except Exception:
                log.warning("scoring listener disconnected; polling until it is back")
                await asyncio.sleep(1.0)
