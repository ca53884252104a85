"""The scoring service: engine, keys, rate limits and queue workers, in one object.

An app mounts it with `scoring_router(service)` (api/actions/routes.py) and its lifespan (see
`api/actions/__init__.py`); the service borrows the app's connection pool, it never makes one,
and it knows nothing of controllers or routers.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from psycopg_pool import AsyncConnectionPool

from api.actions import score_queries, store
from api.actions.auth import KeyAuthenticator
from api.actions.config import Settings
from api.actions.queue import QueueWorkers
from api.actions.ratelimit import RateLimiter
from api.actions.schemas import BatchAccepted, EventQueued, EventScored
from api.actions.store import Principal
from api.errors import ApiError, bad_request
from api.scoring import ActionEvent, Engine

Pool = AsyncConnectionPool[Any]
API_KEY_HEADER = "x-api-key"


@functools.cache
def _shipped_engine(internal_domains: tuple[str, ...] = ()) -> Engine:
    """The engine with the shipped rules, loaded once per process (it is immutable once built)."""
    return Engine.load(internal_domains=internal_domains)


class ScoringService:
    """Holds what the scoring routes need; `start(pool)` / `stop()` run the queue workers."""

    def __init__(self, settings: Settings | None = None, engine: Engine | None = None) -> None:
        self.settings = settings or Settings()
        self.engine = engine or _shipped_engine(self.settings.internal_domains)
        self.limiter = RateLimiter(self.settings.rates)
        self.keys = KeyAuthenticator(self.settings.key_cache_seconds)
        self._pool: Pool | None = None
        self._workers: QueueWorkers | None = None

    @classmethod
    def from_env(cls) -> ScoringService:
        """Settings from ``GOVRIX_*`` (config.py), the shipped rules."""
        return cls(Settings.from_env())

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, pool: Pool) -> None:
        """Use `pool` for requests and start the background queue workers."""
        self._pool = pool
        self._workers = QueueWorkers(pool, self.engine, self.settings)
        await self._workers.start()

    async def stop(self) -> None:
        """Stop the workers (a batch in flight rolls back and is picked again later)."""
        if self._workers is not None:
            await self._workers.stop()
            self._workers = None

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """For `Litestar(lifespan=[..., service.lifespan])` after the lifespan that sets
        ``app.state.pool``."""
        await self.start(app.state.pool)
        try:
            yield
        finally:
            await self.stop()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise ApiError(503, "scoring service not started")
        return self._pool

    # --- auth and rate limit --------------------------------------------------------------

    async def guard(
        self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        """Every scoring route: a live `X-API-Key` (401) within its tier's rate (429). A database
        outage surfaces as the 503 of api/errors.py."""
        key = connection.headers.get(API_KEY_HEADER)
        if not key:
            raise ApiError(401, "missing X-API-Key header")
        principal = await self.keys.authenticate(self.pool, key)
        if principal is None:
            raise ApiError(401, "invalid or revoked API key")
        wait = self.limiter.take(principal.customer_id, principal.tier)
        if wait:
            raise ApiError(
                429,
                f"rate limit of the {principal.tier} tier exceeded; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        connection.state.govrix_principal = principal

    # --- operations -----------------------------------------------------------------------

    async def score_one(
        self, caller: Principal, event: ActionEvent, raw: bytes
    ) -> EventScored | EventQueued:
        """Store, score and answer one event; a repeated event_id answers what is stored."""
        cid = caller.customer_id
        try:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    stored = await store.insert_action(
                        conn,
                        cid,
                        event,
                        raw,
                        baseline_hours=self.settings.baseline_hours,
                        recent=self.settings.recent_actions,
                        sync_commit=self.settings.sync_commit,
                    )
                    if stored is not None:
                        result = await self.engine.score_with_fallback(
                            event, stored[1], self.settings.llm
                        )
                        await store.insert_score(conn, cid, result)
                        return EventScored.from_result(result)
                # Already stored (a repeat, possibly concurrent: the insert above waited for the
                # other transaction to commit before reporting the conflict).
                previous = await score_queries.stored_score(conn, cid, event.event_id)
                if previous is not None:
                    return previous
                status = await score_queries.queue_status(conn, cid, event.event_id)
                return EventQueued(event.event_id, "failed" if status == "failed" else "pending")
        except psycopg.DataError as e:  # e.g. a \u0000 that PostgreSQL text cannot hold
            raise bad_request("body", "a value cannot be stored (NUL character?)") from e

    async def accept_batch(
        self, caller: Principal, events: Sequence[tuple[ActionEvent, bytes]]
    ) -> BatchAccepted:
        """Store and queue validated events in one transaction; duplicates (in the batch or
        already stored) are accepted once and never queued twice."""
        unique: dict[str, tuple[ActionEvent, bytes]] = {}
        for ev, raw in events:
            unique.setdefault(ev.event_id, (ev, raw))
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await store.insert_batch(conn, caller.customer_id, list(unique.values()))
        except psycopg.DataError as e:
            raise bad_request("events", "a value cannot be stored (NUL character?)") from e
        return BatchAccepted(event_ids=list(unique), count=len(unique))
