"""``just replay``: a real capture (``mitmdump -w``) re-ingested offline gives the same events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from addon import config
from scripts.replay import replay
from tests.fakeprovider import FakeProvider
from tests.proxyharness import Proxy, events, wait_events

pytestmark = pytest.mark.e2e


def test_replay_of_a_real_capture(
    dsn: str, tmp_path: Path, postgresql: psycopg.Connection[Any]
) -> None:
    capture = tmp_path / "capture.flows"
    fake = FakeProvider().start()
    # 1. capture live traffic with the proxy writing a flow file (into a scratch database)
    proxy = Proxy(dsn, tmp_path / "live", fake, args=["-w", str(capture)]).start()
    try:
        with httpx.Client(
            proxy=f"http://replayed-agent:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
        ) as http:
            http.post(
                "https://api.openai.com/v1/chat/completions",
                json={
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": "mail bob@corp.com"}],
                },
            )
            http.post(
                "https://api.anthropic.com/v1/messages",
                json={
                    "model": "claude-3-5-sonnet-20241022",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            http.get(f"{fake.url}/not-an-llm")
        live = wait_events(dsn, 6)  # two calls, and the egress to another host (metadata only)
    finally:
        proxy.stop()
        fake.stop()
    assert capture.stat().st_size > 0

    # 2. replay it into an empty events table
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM events")
    settings = config.load({"GOVRIX_DATABASE_URL": dsn, "GOVRIX_HOME": str(tmp_path / "replay")})
    seen, recorded = replay([capture], settings)
    assert (seen, recorded) == (3, 2)
    again = events(dsn)
    assert len(again) == 6

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r["direction"],
            r["provider"],
            r["model"],
            r["prompt_tokens"],
            r["completion_tokens"],
            r["cost_usd"],
            r["pii_types"],
            r["agent_id"],
            r["timestamp"] if r["direction"] == "request" else None,
        )

    assert sorted(map(key, again)) == sorted(map(key, live))
