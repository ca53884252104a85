"""``GET /api/v1/stats/proxies`` (api/proxies.py): each proxy's health, scraped from the same
exposition the proxy serves (a real ``CallbackCollector`` behind prometheus_client's server), a
dead endpoint reported ``up: false``, and the Overview's "Proxy health" panel."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from prometheus_client import CollectorRegistry, start_http_server

from addon.metrics import CallbackCollector
from api.app import create_app
from api.proxies import urls_from
from tests.apiutil import AUTH, KEY
from tests.test_console import login


@pytest.fixture
def endpoint() -> Iterator[tuple[str, CallbackCollector]]:
    live = CallbackCollector()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(live)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics", live
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_of_a_live_and_a_dead_proxy(
    dsn: str, endpoint: tuple[str, CallbackCollector]
) -> None:
    url, live = endpoint
    live.gauges["govrix_recorder_backlog_bytes"] = ("backlog", lambda: 2048.0)
    live.gauges["govrix_writer_spool_bytes"] = ("spool", lambda: 0.0)
    live.gauges["govrix_writer_buffer_depth"] = ("depth", lambda: 7.0)
    live.gauges["govrix_writer_lag_seconds"] = ("lag", lambda: 1.5)
    live.gauges["govrix_policy_version"] = ("version", lambda: 4.0)
    live.counters["govrix_writer_dropped"] = ("dropped", lambda: 3.0)
    dead = f"http://127.0.0.1:{_free_port()}/metrics"
    app = create_app(dsn, KEY, with_scoring=False, proxy_metrics_urls=[url, dead])
    with TestClient(app) as c:
        r = c.get("/api/v1/stats/proxies", headers=AUTH)
        assert r.status_code == 200, r.text
        up, down = r.json()["items"]
        assert up["url"] == url and up["up"] is True and up["error"] is None
        assert up["recorder_backlog_bytes"] == 2048.0
        assert up["buffer_depth"] == 7.0 and up["writer_lag_seconds"] == 1.5
        assert up["spool_bytes"] == 0.0 and up["policy_version"] == 4.0
        assert up["events_dropped"] == 3.0
        assert up["captures_lost"] is None  # not exported by this endpoint: unknown, not 0
        assert down["url"] == dead and down["up"] is False and down["error"]
        assert c.get("/api/v1/stats/proxies").status_code == 401

        login(c)
        page = c.get("/").text
        assert 'data-testid="proxy-health"' in page
        assert page.count('data-testid="proxy-row"') == 2
        assert "2.0 KB" in page and "not answering" in page


def test_scrapes_are_shared_for_two_seconds(
    dsn: str, endpoint: tuple[str, CallbackCollector]
) -> None:
    url, live = endpoint
    depth = [1.0]
    live.gauges["govrix_writer_buffer_depth"] = ("depth", lambda: depth[0])
    with TestClient(create_app(dsn, KEY, with_scoring=False, proxy_metrics_urls=[url])) as c:
        first = c.get("/api/v1/stats/proxies", headers=AUTH).json()["items"][0]
        depth[0] = 9.0
        again = c.get("/api/v1/stats/proxies", headers=AUTH).json()["items"][0]
        assert first["buffer_depth"] == again["buffer_depth"] == 1.0


def test_no_endpoint_configured(dsn: str) -> None:
    with TestClient(create_app(dsn, KEY, with_scoring=False, proxy_metrics_urls=[])) as c:
        assert c.get("/api/v1/stats/proxies", headers=AUTH).json() == {"items": []}
        login(c)
        assert "No proxy metrics endpoint configured" in c.get("/").text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["http://127.0.0.1:4002/metrics"]),
        ({"GOVRIX_PROXY_METRICS_PORT": "9100"}, ["http://127.0.0.1:9100/metrics"]),
        ({"GOVRIX_PROXY_METRICS_PORT": "0"}, []),
        (
            {"GOVRIX_PROXY_METRICS_URLS": "http://a:1/metrics, http://b:2/metrics,"},
            ["http://a:1/metrics", "http://b:2/metrics"],
        ),
    ],
)
def test_urls_from_the_environment(env: dict[str, str], expected: list[str]) -> None:
    assert urls_from(env) == expected
