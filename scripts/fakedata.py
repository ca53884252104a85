"""Realistic fake events: for tests, benchmarks and the API load script (every column exercised)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from addon import ids
from addon.event import COLUMNS, Event
from addon.lineage import Chain

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20241022", "gemini-1.5-pro", None]
PROVIDERS = ["openai", "anthropic", "gemini", "azure", None]


def make_events(
    n: int,
    *,
    sessions: int = 10,
    agents: int = 3,
    start: datetime | None = None,
    step: timedelta = timedelta(milliseconds=3),
    seed: int = 7,
) -> list[Event]:
    """``n`` chained events spread over sessions and agents, with every column populated."""
    rnd = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(minutes=5)
    agent_ids = [ids.agent_id(f"name:agent-{i}") for i in range(agents)]
    session_ids = [ids.session_id() for _ in range(sessions)]
    chain = Chain()
    out: list[Event] = []
    for i in range(n):
        s = i % sessions
        direction = "request" if i % 2 == 0 else "response"
        pii = rnd.random() < 0.1
        ev = Event(
            id=ids.event_id(),
            parent_id=out[-1].id if direction == "response" else None,
            agent_id=agent_ids[s % agents],
            session_id=session_ids[s],
            timestamp=start + step * i,
            direction=direction,
            provider=rnd.choice(PROVIDERS),
            endpoint="chat.completions",
            model=rnd.choice(MODELS),
            prompt_tokens=rnd.randint(0, 5000),
            completion_tokens=rnd.randint(0, 900) if direction == "response" else None,
            total_tokens=rnd.randint(0, 6000),
            cached_tokens=rnd.choice([None, 0, 128]),
            reasoning_tokens=rnd.choice([None, 0, 64]),
            usage_source=rnd.choice(["reported", "estimated", "missing"]),
            cost_usd=rnd.choice([None, round(rnd.random() / 100, 8)]),
            status_code=200 if direction == "response" else None,
            latency_ms=rnd.random() * 900 if direction == "response" else None,
            ttfb_ms=rnd.random() * 200 if direction == "response" else None,
            compliance_tag=rnd.choice(["default", "pci", "hipaa"]),
            pii_detected=pii,
            pii_types=["email", "phone"] if pii else [],
            pii_findings=[{"type": "email", "count": 2, "path": "$.messages[0].content"}]
            if pii
            else None,
            tool_calls=[{"name": "get_weather", "arguments": '{"city":"Oslo"}'}]
            if i % 7 == 0
            else None,
            policy_decisions=[{"rule": "tag-pci", "action": "tag"}] if i % 11 == 0 else None,
            error=None,
            parse_error="unexpected end of JSON" if i % 97 == 0 else None,
            request_bytes=rnd.randint(100, 100_000),
            response_bytes=rnd.randint(100, 100_000) if direction == "response" else None,
        )
        out.append(chain.seal(ev))
    return out


def fetch_events(
    conn: psycopg.Connection[Any], where: str = "TRUE", params: tuple[Any, ...] = ()
) -> list[Event]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {', '.join(repr(c).replace(chr(39), chr(34)) for c in COLUMNS)} FROM events WHERE {where} ORDER BY id",
            params,
        )
        return [msgspec.convert(row, Event) for row in cur.fetchall()]
