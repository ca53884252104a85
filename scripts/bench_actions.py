"""Benchmark action risk scoring: the engine per event, and `POST /events` over real HTTP.

    .venv/bin/python -m scripts.bench_actions [--requests 4000] [--concurrency 8]

Route numbers come from a real uvicorn process (`python -m api.actions`, one worker) against
PostgreSQL: `GOVRIX_DATABASE_URL` when set, else a fresh database on the embedded cluster.
Latency is measured by the client (httpx, async, keep-alive), so it includes HTTP, auth, rate
limit, the action insert, the history query, scoring and the score insert: everything.
Target (brief): `POST /events` p99 <= 10 ms at concurrency 8.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from api.scoring import Engine, decode_action_event
from scripts import migrate, pgembed
from scripts.apikey import create_key
from scripts.bench_engine import load_corpus

ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = "govrix_bench_actions"


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def row(name: str, ms: list[float]) -> str:
    return (
        f"{name:<34}{len(ms):>7}{pct(ms, 0.5):>9.3f}{pct(ms, 0.9):>9.3f}{pct(ms, 0.99):>9.3f}"
        f"{max(ms):>9.3f}{statistics.fmean(ms):>9.3f}"
    )


def bench_engine(iterations: int) -> list[float]:
    """Per-event `Engine.score` (decode excluded) over the labelled corpus, in ms."""
    engine = Engine.load()
    events = [(decode_action_event(raw), h) for raw, h in load_corpus()]
    for e, h in events:
        engine.score(e, h)
    out: list[float] = []
    for _ in range(iterations):
        for e, h in events:
            t = time.perf_counter_ns()
            engine.score(e, h)
            out.append((time.perf_counter_ns() - t) / 1e6)
    return out


def database_url() -> str:
    url = os.environ.get("GOVRIX_DATABASE_URL")
    if url:
        migrate.apply(url)
        return url
    cluster = pgembed.start()
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    url = cluster.url(BENCH_DB)
    migrate.apply(url)
    return url


def event_body(i: int, run: str) -> dict[str, Any]:
    """Seed-shaped events over 50 agents, 5 servers and 200 resources (history is real)."""
    return {
        "event_id": f"{run}-{i}",
        "action": ("mcp:github:pr.create", "db:customers:records.read", "mcp:slack:message.send")[
            i % 3
        ],
        "timestamp": "2026-02-26T10:00:00Z",
        "agent": {"agent_id": f"agent-{i % 50}", "framework": "langchain"},
        "session": {"session_id": f"sess-{i % 200}"},
        "target": {
            "resource_type": "repository",
            "resource_id": f"org/repo-{i % 200}",
            "sensitivity_level": i % 5,
        },
        "mcp_context": {"server_name": f"srv-{i % 5}", "is_verified": i % 4 != 0},
        "data_fields_accessed": ["email", {"field": "source_code", "classification": "internal"}],
        "preceding_actions": ["mcp:github:repo.read"],
        "parameters": {"title": "x"},
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc), to show cost apart from load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def post_all(
    c: httpx.AsyncClient, bodies: list[dict[str, Any]], concurrency: int
) -> list[float]:
    """POST every body with `concurrency` requests in flight; latencies in ms."""
    out: list[float] = []
    queue = iter(bodies)

    async def worker() -> None:
        for body in queue:  # the shared iterator hands each body to one worker
            t = time.perf_counter()
            r = await c.post("/events", json=body)
            out.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def bench_route(
    url: str, key: str, n: int, concurrency: int, run: str, pid: int
) -> dict[str, list[float]]:
    """Latencies per phase; prints batch timings and server CPU per request."""
    headers = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as c:
        await post_all(c, [event_body(i, run + "w") for i in range(200)], concurrency)  # warm-up
        out["POST /events new (c=1)"] = await post_all(
            c, [event_body(i, run + "s") for i in range(min(n, 1000))], 1
        )
        bodies = [event_body(i, run) for i in range(n)]
        cpu0 = cpu_seconds(pid)
        out[f"POST /events new (c={concurrency})"] = await post_all(c, bodies, concurrency)
        cpu_new = (cpu_seconds(pid) - cpu0) / n * 1000
        out[f"POST /events repeat (c={concurrency})"] = await post_all(c, bodies, concurrency)

        batch = [event_body(i, run + "b") for i in range(1000)]
        t = time.perf_counter()
        r = await c.post("/events/batch", json={"events": batch})
        r.raise_for_status()
        accept_ms = (time.perf_counter() - t) * 1000
        for _ in range(6000):  # poll the backlog (another process scores; no event to await)
            if not (await c.get("/scores/bench/summary")).json()["pending"]:
                break
            await asyncio.sleep(0.02)
        batch_s = time.perf_counter() - t
    print(f"API process CPU per new event: {cpu_new:.2f} ms")
    print(f"batch of 1,000: 202 in {accept_ms:.1f} ms; all scored after {batch_s:.2f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100, help="engine corpus passes")
    parser.add_argument("--port", type=int, default=4092)
    args = parser.parse_args()

    engine_ms = bench_engine(args.iterations)

    dsn = database_url()
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, key = create_key(conn, "bench", "enterprise")
    env = {**os.environ, "GOVRIX_RATE_ENTERPRISE": "1000000", "GOVRIX_DATABASE_URL": dsn}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.actions", "--port", str(args.port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/scores/event/x", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        run = uuid.uuid4().hex[:8]
        phases = asyncio.run(bench_route(url, key, args.requests, args.concurrency, run, proc.pid))
    finally:
        proc.terminate()
        proc.wait(10)

    print(
        f"\n{'measure':<34}{'n':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'mean':>9}"
    )
    print(row("engine.score (per event)", engine_ms))
    for name, ms in phases.items():
        print(row(name, ms))
    new = phases[f"POST /events new (c={args.concurrency})"]
    p99 = pct(new, 0.99)
    print(f"\nPOST /events p99 = {p99:.2f} ms (target <= 10 ms): {'OK' if p99 <= 10 else 'OVER'}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
