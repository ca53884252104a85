"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class ApiMetrics:
    """Request counters and latencies by route template, plus the SSE hub's counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "govrix_api_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "govrix_api_request_seconds",
            "Time to the response's first byte",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.sse_subscribers = Gauge(
            "govrix_api_sse_subscribers", "Open /events/stream connections", registry=r
        )
        self.sse_sent = Counter(
            "govrix_api_sse_events_sent", "Events written to SSE subscribers", registry=r
        )
        self.sse_overflows = Counter(
            "govrix_api_sse_overflows",
            "Times a slow subscriber's queue filled and it switched to catch-up from the database",
            registry=r,
        )
        self.sse_fetched = Counter(
            "govrix_api_sse_rows_fetched", "Rows the stream hub read after a NOTIFY", registry=r
        )
        self.sse_listener_up = Gauge(
            "govrix_api_sse_listener_connected", "1 while LISTEN govrix_events is connected",
            registry=r,
        )  # fmt: skip

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware: count and time every HTTP request by its route template."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            method = str(scope.get("method", ""))
            start = time.perf_counter()
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    self.latency.labels(method, _route(scope)).observe(time.perf_counter() - start)
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                self.requests.labels(method, _route(scope), str(status)).inc()

        return wrapped


def _route(scope: Scope) -> str:
    # The template keeps label cardinality bounded (never the raw path with ids in it).
    template: Any = scope.get("path_template")
    return str(template) if template else "unmatched"


@get("/metrics", operation_id="metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(metrics: NamedDependency[ApiMetrics]) -> Response[bytes]:
    """Prometheus text exposition of this process's metrics."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
