"""The proxies' health, read from their scrape endpoints: ``GET /api/v1/stats/proxies``.

The proxy already exports what an operator needs to know whether nothing is being lost
(``addon/metrics.py``): the recorder's backlog, the spool, the writer's buffer and lag, the policy
version in force. This route scrapes each configured endpoint (concurrently, 0.5 s each, cached
for two seconds so a busy Overview does not multiply scrapes) and answers the few numbers the
console's Overview shows; an endpoint that does not answer is reported ``up: false`` with the
reason, never an error of the route.

Which endpoints: ``GOVRIX_PROXY_METRICS_URLS`` (comma-separated, for several proxies or hosts),
else ``http://127.0.0.1:<GOVRIX_PROXY_METRICS_PORT or 4002>/metrics`` (the proxy ``up`` starts);
port ``0`` (metrics disabled) means none.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence

import httpx
import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from prometheus_client.parser import text_string_to_metric_families

from api.errors import error_responses

__all__ = ["ProxyHealth", "ProxyHealthList", "ProxyScraper", "ProxyStatsController", "urls_from"]

DEFAULT_METRICS_PORT = 4002
TIMEOUT = 0.5
TTL = 2.0

#: Gauge or counter sample -> field of :class:`ProxyHealth`.
_FIELDS = {
    "govrix_recorder_backlog_bytes": "recorder_backlog_bytes",
    "govrix_writer_spool_bytes": "spool_bytes",
    "govrix_writer_buffer_depth": "buffer_depth",
    "govrix_writer_lag_seconds": "writer_lag_seconds",
    "govrix_writer_dropped_total": "events_dropped",
    "govrix_recorder_lost_total": "captures_lost",
    "govrix_policy_version": "policy_version",
    "govrix_agent_table_live": "agent_table_live",
    "govrix_policy_sync_live": "policy_sync_live",
}


class ProxyHealth(msgspec.Struct, kw_only=True):
    """One proxy's scrape: ``up`` false (with ``error``) when it did not answer."""

    url: str
    up: bool
    error: str | None = None
    scraped_at: float | None = None  # seconds since the epoch
    recorder_backlog_bytes: float | None = None
    spool_bytes: float | None = None
    buffer_depth: float | None = None
    writer_lag_seconds: float | None = None
    events_dropped: float | None = None
    captures_lost: float | None = None
    policy_version: float | None = None
    agent_table_live: float | None = None
    policy_sync_live: float | None = None


class ProxyHealthList(msgspec.Struct, kw_only=True):
    items: list[ProxyHealth]


def urls_from(env: Mapping[str, str] = os.environ) -> list[str]:
    """The scrape endpoints the environment names (module docstring)."""
    raw = env.get("GOVRIX_PROXY_METRICS_URLS", "").strip()
    if raw:
        return [u.strip() for u in raw.split(",") if u.strip()]
    try:
        port = int(float(env.get("GOVRIX_PROXY_METRICS_PORT") or DEFAULT_METRICS_PORT))
    except ValueError:
        port = DEFAULT_METRICS_PORT
    return [f"http://127.0.0.1:{port}/metrics"] if port else []


def parse(url: str, text: str) -> ProxyHealth:
    """The fields of :class:`ProxyHealth` from a Prometheus text exposition."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field = _FIELDS.get(sample.name)
            if field is not None and not sample.labels:
                values[field] = float(sample.value)
    health = ProxyHealth(url=url, up=True, scraped_at=time.time())
    for field, value in values.items():
        setattr(health, field, value)
    return health


class ProxyScraper:
    """Scrapes the endpoints, at most once per ``ttl`` (concurrent callers share one scrape)."""

    def __init__(self, urls: Sequence[str], *, timeout: float = TIMEOUT, ttl: float = TTL) -> None:
        self.urls = list(urls)
        self.timeout = timeout
        self.ttl = ttl
        self._at = 0.0
        self._last: list[ProxyHealth] | None = None
        self._lock = asyncio.Lock()

    async def health(self) -> list[ProxyHealth]:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._at < self.ttl:
                return self._last
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                self._last = list(await asyncio.gather(*(self._one(client, u) for u in self.urls)))
            self._at = time.monotonic()
            return self._last

    async def _one(self, client: httpx.AsyncClient, url: str) -> ProxyHealth:
        try:
            r = await client.get(url)
            r.raise_for_status()
            return parse(url, r.text)
        except (httpx.HTTPError, ValueError) as e:
            reason = str(e) or type(e).__name__
            return ProxyHealth(url=url, up=False, error=reason[:200])


class ProxyStatsController(Controller):
    path = "/stats/proxies"
    tags = ["stats"]

    @get("/", operation_id="statsProxies", responses=error_responses(401))
    async def proxies(self, proxy_scraper: NamedDependency[ProxyScraper]) -> ProxyHealthList:
        """The health of each configured proxy: recorder backlog, spool bytes, writer buffer and
        lag, events dropped, the policy version in force (``up: false`` when it did not answer).
        """
        return ProxyHealthList(items=await proxy_scraper.health())
