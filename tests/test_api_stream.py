"""SSE ``/api/v1/events/stream`` against a real uvicorn server and the real writer (NOTIFY)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
from psycopg import AsyncConnection

from addon.event import Event
from api.db import make_pool
from api.metrics import ApiMetrics
from api.stream import StreamHub, Subscriber, event_source, id_floor
from scripts.fakedata import make_events
from tests.apiutil import AUTH, live_server, write_events

DEADLINE = 60.0  # a guard against hanging, not a speed assertion


@dataclass
class Message:
    event: str | None = None
    id: str | None = None
    data: str = ""
    comment: str | None = None
    fields: list[str] = field(default_factory=list)


async def sse(response: httpx.Response) -> AsyncIterator[Message]:
    """Parse an SSE body into messages; comment lines come out as their own messages."""
    msg = Message()
    async for line in response.aiter_lines():
        if line == "":
            if msg.fields:
                yield msg
            msg = Message()
        elif line.startswith(":"):
            yield Message(comment=line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            msg.fields.append(name)
            if name == "event":
                msg.event = value
            elif name == "id":
                msg.id = value
            elif name == "data":
                msg.data += value


async def take_events(msgs: AsyncIterator[Message], n: int) -> list[Message]:
    out: list[Message] = []
    async with asyncio.timeout(DEADLINE):
        async for m in msgs:
            if m.comment is None:
                out.append(m)
                if len(out) == n:
                    break
    return out


async def events_until_keepalive(msgs: AsyncIterator[Message], at_least: int) -> list[Message]:
    """Every event message until a keepalive arrives after ``at_least`` events."""
    out: list[Message] = []
    async with asyncio.timeout(DEADLINE):
        async for m in msgs:
            if m.comment is None:
                out.append(m)
            elif m.comment == "keepalive" and len(out) >= at_least:
                break
    return out


async def write(dsn: str, evs: list[Event], spool: Path) -> None:
    await asyncio.to_thread(write_events, dsn, evs, spool)


async def test_stream_in_order_then_resume_exactly_the_missed(dsn: str, tmp_path: Path) -> None:
    first = make_events(50, sessions=5, agents=2, seed=1)
    with live_server(dsn, keepalive_interval=0.3) as srv:
        async with httpx.AsyncClient(base_url=srv.url, headers=AUTH, timeout=30) as c:
            async with c.stream("GET", "/api/v1/events/stream") as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                msgs = sse(r)
                assert (await anext(msgs)).comment == "connected"
                await write(dsn, first, tmp_path / "a")
                got = await take_events(msgs, 50)
            assert [m.id for m in got] == [e.id for e in first]
            for m, ev in zip(got, first, strict=True):
                assert m.event == "agent_event"
                data = msgspec.json.decode(m.data)
                assert data["id"] == m.id == ev.id
                assert data["agent_id"] == ev.agent_id
                assert data["lineage_hash"] == ev.lineage_hash
                assert data["timestamp"].endswith("Z")

            # Disconnected: 100 more are written; resuming from the last id gives exactly those.
            second = make_events(100, sessions=5, agents=2, seed=2)
            await write(dsn, second, tmp_path / "b")
            headers = {"Last-Event-ID": got[-1].id or ""}
            async with c.stream("GET", "/api/v1/events/stream", headers=headers) as r:
                resumed = await events_until_keepalive(sse(r), at_least=100)
            assert [m.id for m in resumed] == [e.id for e in second]

            # The query parameter does the same (for clients that cannot set headers).
            params = {"last_event_id": first[24].id}
            async with c.stream("GET", "/api/v1/events/stream", params=params) as r:
                resumed = await events_until_keepalive(sse(r), at_least=125)
            assert [m.id for m in resumed] == [e.id for e in first[25:] + second]

            # Resumed, then live: the replay hands over to the listener without gap or repeat.
            third = make_events(30, sessions=2, agents=1, seed=3)
            headers = {"Last-Event-ID": second[89].id}
            async with c.stream("GET", "/api/v1/events/stream", headers=headers) as r:
                msgs = sse(r)
                replayed = await take_events(msgs, 10)
                await write(dsn, third, tmp_path / "c")
                live = await events_until_keepalive(msgs, at_least=30)
            assert [m.id for m in replayed + live] == [e.id for e in second[90:] + third]

            # Every closed stream left the hub.
            async with asyncio.timeout(DEADLINE):
                while "govrix_api_sse_subscribers 0.0" not in (await c.get("/metrics")).text:
                    await asyncio.sleep(0.05)


async def test_stream_filters(dsn: str, tmp_path: Path) -> None:
    evs = make_events(60, sessions=6, agents=3, seed=4)
    agent, session = evs[0].agent_id, evs[1].session_id
    want_agent = [e.id for e in evs if e.agent_id == agent]
    want_session = [e.id for e in evs if e.session_id == session]
    stream = "/api/v1/events/stream"
    with live_server(dsn, keepalive_interval=0.3) as srv:
        async with (
            httpx.AsyncClient(base_url=srv.url, headers=AUTH, timeout=30) as c,
            c.stream("GET", stream, params={"agent_id": agent}) as ra,
            c.stream("GET", stream, params={"session_id": session}) as rs,
        ):
            ma, ms = sse(ra), sse(rs)
            assert (await anext(ma)).comment == "connected"
            assert (await anext(ms)).comment == "connected"
            await write(dsn, evs, tmp_path)
            by_agent = await events_until_keepalive(ma, at_least=len(want_agent))
            by_session = await events_until_keepalive(ms, at_least=len(want_session))
    assert [m.id for m in by_agent] == want_agent
    assert [m.id for m in by_session] == want_session


async def test_slow_subscriber_catches_up_without_stalling_others(dsn: str, tmp_path: Path) -> None:
    evs = make_events(40, sessions=4, agents=2, seed=5)
    await write(dsn, evs, tmp_path)
    metrics = ApiMetrics()
    hub = StreamHub(dsn, metrics, queue_size=5)
    pool = make_pool(dsn, min_size=1, max_size=2)
    await pool.open()
    try:
        slow = event_source(hub, pool, (None, None), None, keepalive=0.2)
        assert await anext(slow) == b": connected\n\n"
        fast = Subscriber(None, None, queue_size=1000)
        hub.subscribers.add(fast)
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            await hub._fetch(conn)
        # The hub did not wait for the slow one: the fast one holds everything already.
        assert fast.queue.qsize() == 40
        assert metrics.sse_overflows._value.get() == 1
        chunks = []
        async with asyncio.timeout(DEADLINE):
            while len(chunks) < 40:
                chunk = await anext(slow)
                if chunk.startswith(b"id: "):
                    chunks.append(chunk)
            # Nothing more to send: the next thing is a keepalive, not a duplicate.
            assert await anext(slow) == b": keepalive\n\n"
        assert [c.split(b"\n", 1)[0][4:].decode() for c in chunks] == [e.id for e in evs]
        assert all(b"\nevent: agent_event\ndata: {" in c for c in chunks)
        await slow.aclose()
        assert fast in hub.subscribers and len(hub.subscribers) == 1
    finally:
        await pool.close()


async def test_late_commit_with_smaller_ids_is_not_lost_or_repeated(
    dsn: str, tmp_path: Path
) -> None:
    early = make_events(10, sessions=2, agents=1, seed=6)  # smaller ids ...
    late = make_events(10, sessions=2, agents=1, seed=7)  # ... committed first (other proxy)
    hub = StreamHub(dsn, ApiMetrics(), queue_size=100)
    sub = hub.subscribe(None, None)
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await write(dsn, late, tmp_path / "late")
        await hub._fetch(conn)
        await write(dsn, early, tmp_path / "early")
        await hub._fetch(conn)
        await hub._fetch(conn)  # a spurious wake-up repeats nothing
    got = [sub.queue.get_nowait().id for _ in range(sub.queue.qsize())]
    assert got == [e.id for e in late] + [e.id for e in early]


def test_id_floor() -> None:
    from addon import ids

    now = ids.event_id()
    then = ids.event_id()
    assert id_floor(then, 0) <= now < then
    assert id_floor(then, 2000) < id_floor(then, 0)
    assert id_floor(then, 2000).startswith("evt_")
    assert len(id_floor(then, 2000)) == len(then)
    assert ids.ulid_time_ms(id_floor(then, 2000)) == ids.ulid_time_ms(then) - 2000
    assert id_floor("weird", 2000) == "weird"
