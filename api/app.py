"""The application factory: routes, auth, error mapping, OpenAPI, pool and stream-hub lifespan,
and the operator console at ``/`` (api/console/, docs/console.md).

The app is built from a connection string (never from a pool made elsewhere): the pool and the
SSE hub are born in the lifespan, on the loop that serves requests.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import Guard

from api.actions import ScoringService, scoring_router
from api.agents import AgentController
from api.audit import AuditController
from api.budgets import BudgetController
from api.console import build_console
from api.count_cache import TotalCache
from api.db import make_pool
from api.errors import handle_exception
from api.events import EventController, Pool
from api.health import health, ready
from api.keys import KeyController
from api.metrics import ApiMetrics, metrics_endpoint
from api.policies import PolicyController
from api.proxies import ProxyScraper, ProxyStatsController, urls_from
from api.sessions import SessionController
from api.stats import StatsCache, StatsController
from api.stream import StreamController, StreamHub

API_PREFIX = "/api/v1"


def bearer_guard(api_key: str) -> Guard:
    """A guard accepting ``Authorization: Bearer <api_key>`` only (constant-time comparison)."""
    expected = api_key.encode()

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise NotAuthorizedException(
                detail="missing or invalid API key",
                headers={"WWW-Authenticate": 'Bearer realm="govrix"'},
            )

    return guard


def create_app(
    database_url: str,
    api_key: str | None,
    *,
    insecure_no_auth: bool = False,
    keepalive_interval: float = 15.0,
    sse_queue_size: int = 1000,
    sse_lookback_ms: int = 2000,
    sse_poll_interval: float = 1.0,
    count_exact_below: int = 10_000,
    count_ttl: float = 5.0,
    scoring: ScoringService | None = None,
    with_scoring: bool = True,
    proxy_metrics_urls: Sequence[str] | None = None,
) -> Litestar:
    """Build the API. Without ``api_key``, ``insecure_no_auth=True`` must say so explicitly.

    The action risk scoring routes (``POST /events``, ``/scores/…``, ``X-API-Key``) are mounted
    too, configured from ``GOVRIX_*`` unless a ``scoring`` service is given. The proxies whose
    health the Overview shows: ``proxy_metrics_urls``, else the environment (api/proxies.py).
    """
    if not api_key and not insecure_no_auth:
        raise ValueError("an API key is required (or insecure_no_auth=True)")
    metrics = ApiMetrics()
    counts = TotalCache(exact_below=count_exact_below, ttl=count_ttl)
    stats_cache = StatsCache()
    scraper = ProxyScraper(urls_from() if proxy_metrics_urls is None else proxy_metrics_urls)
    console = build_console(api_key, insecure_no_auth=insecure_no_auth)  # pages at / (issue 12)
    if with_scoring and scoring is None:
        scoring = ScoringService.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = make_pool(database_url)
        await pool.open(wait=False)  # start even while PostgreSQL is away: /ready says 503
        hub = StreamHub(
            database_url,
            metrics,
            queue_size=sse_queue_size,
            lookback_ms=sse_lookback_ms,
            poll_interval=sse_poll_interval,
        )
        await hub.start()
        app.state.pool, app.state.hub = pool, hub
        if scoring is not None:
            await scoring.start(pool)
        try:
            yield
        finally:
            if scoring is not None:
                await scoring.stop()
            await hub.stop()
            await counts.close()
            await stats_cache.close()
            await pool.close()

    def provide_pool(state: State) -> Pool:
        pool: Pool = state.pool
        return pool

    def provide_hub(state: State) -> StreamHub:
        hub: StreamHub = state.hub
        return hub

    guards = [] if insecure_no_auth else [bearer_guard(api_key or "")]
    api = Router(
        path=API_PREFIX,
        route_handlers=[
            StreamController,
            EventController,
            AgentController,
            SessionController,
            BudgetController,
            KeyController,
            PolicyController,
            AuditController,
            StatsController,
            ProxyStatsController,
        ],
        guards=guards,
        security=[] if insecure_no_auth else [{"BearerToken": []}],
    )
    return Litestar(
        route_handlers=[
            api,
            health,
            ready,
            metrics_endpoint,
            *([scoring_router(scoring, admin_guards=guards)] if scoring else []),
            *console.route_handlers,
        ],
        template_config=console.template_config,
        lifespan=[lifespan],
        dependencies={
            "pool": Provide(provide_pool, sync_to_thread=False),
            "hub": Provide(provide_hub, sync_to_thread=False),
            "metrics": Provide(lambda: metrics, sync_to_thread=False),
            "counts": Provide(lambda: counts, sync_to_thread=False),
            "stats_cache": Provide(lambda: stats_cache, sync_to_thread=False),
            "proxy_scraper": Provide(lambda: scraper, sync_to_thread=False),
            "keepalive_interval": Provide(lambda: keepalive_interval, sync_to_thread=False),
            # DELETE /api/v1/keys/{id} empties this process's scoring-key cache at once.
            "key_cache": Provide(lambda: scoring.keys if scoring else None, sync_to_thread=False),
        },
        exception_handlers={Exception: handle_exception},
        middleware=[metrics.middleware],
        openapi_config=OpenAPIConfig(
            title="Govrix Scout API",
            version="1.0.0",
            path="/schema",
            description="Events, agents (kill switch), sessions and lineage of Govrix Scout.",
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http", scheme="bearer", description="GOVRIX_API_KEY"
                    )
                }
            ),
        ),
    )
