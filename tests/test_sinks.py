"""The proxy's end of the recorder pipe (addon/sinks): batching, retention of every call
until the recorder says it is durable, what a successor is handed; the recorder's side of it; and
the hot path's host helper (addon/route.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from msgspec.structs import replace

from addon import config as config_mod
from addon import lineage, sinks
from addon.acks import Acks
from addon.event import Event
from addon.recorder import Recorder
from addon.route import host_name
from addon.sinks import process, retention
from addon.spool import Spool
from addon.wire import (
    AgentSeen,
    Begin,
    Chunk,
    Deframer,
    Durable,
    End,
    Stream,
    ToProxy,
    ToRecorder,
    frame,
)

# A stand-in recorder: keeps every byte it is sent, answers nothing, exits at end of input.
KEEP = "import sys, shutil; shutil.copyfileobj(sys.stdin.buffer, open(sys.argv[1], 'wb'))"


class Keeper(sinks.ProcessSink):
    def __init__(self, path: str) -> None:
        super().__init__(env=os.environ, on_reply=lambda m: None, on_death=self.died)
        self.path = path
        self.deaths: list[tuple[int, list[ToRecorder]]] = []

    def command(self) -> list[str]:
        return [sys.executable, "-c", KEEP, self.path]

    def died(self, lost: int, waiting: list[ToRecorder]) -> None:
        self.deaths.append((lost, waiting))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Frames per ``writev`` the sink makes."""
    seen: list[int] = []
    real = os.writev

    def counting(fd: int, bufs: Any) -> int:
        seen.append(len(bufs))
        return real(fd, bufs)

    monkeypatch.setattr(process.os, "writev", counting)
    return seen


def test_captures_of_consecutive_loop_iterations_share_one_write(
    tmp_path: Any, writes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "got"
    monkeypatch.setattr(process, "FLUSH_DELAY", 0.5)  # far longer than 20 loop iterations take

    async def run() -> None:
        sink = Keeper(str(out)).start(asyncio.get_running_loop())
        for i in range(20):  # 20 hooks in 20 loop iterations, as requests come
            sink.send(Chunk(f"evt_{i}", b"x" * 100))
            await asyncio.sleep(0)
        assert writes == []  # still within the flush delay
        for _ in range(500):
            if writes:
                break
            await asyncio.sleep(0.01)
        assert writes == [20] and sink.backlog_bytes == 0
        sink.close()

    asyncio.run(run())
    got = Deframer(ToRecorder).feed(out.read_bytes())
    assert [m.request_id for m in got] == [f"evt_{i}" for i in range(20)]


def test_a_large_backlog_goes_at_the_next_iteration(tmp_path: Any, writes: list[int]) -> None:
    out = tmp_path / "got"

    async def run() -> None:
        sink = Keeper(str(out)).start(asyncio.get_running_loop())
        sink.send(Chunk("evt_small", b"x"))
        sink.send(Chunk("evt_big", b"x" * process.FLUSH_BYTES))
        await asyncio.sleep(0)
        assert writes and writes[0] == 2  # no timer wait once FLUSH_BYTES are waiting
        sink.close()

    asyncio.run(run())
    assert len(Deframer(ToRecorder).feed(out.read_bytes())) == 2


def test_close_hands_over_what_waits_for_the_timer(tmp_path: Any) -> None:
    out = tmp_path / "got"

    async def run() -> Keeper:
        sink = Keeper(str(out)).start(asyncio.get_running_loop())
        for i in range(3):
            sink.send(Chunk(f"evt_{i}", b"y"))
        sink.close()  # before the timer fires
        return sink

    sink = asyncio.run(run())
    assert len(Deframer(ToRecorder).feed(out.read_bytes())) == 3
    assert sink.deaths == [] and sink.written == 3


def test_close_counts_what_the_child_never_acknowledged(tmp_path: Any) -> None:
    async def run() -> Keeper:
        sink = Keeper(str(tmp_path / "got")).start(asyncio.get_running_loop())
        sink.send(begin("evt_open"))  # a Keeper answers nothing
        sink.send(begin("evt_refused", status_code=403))
        sink.close()
        return sink

    sink = asyncio.run(run())
    assert sink.unacknowledged == 3  # request + response of one call, the other's request


# -- retention until the recorder says "durable" --------------------------------------------------

# A stand-in recorder that acknowledges what it is sent, by rules given as JSON: keys it never
# acknowledges, keys whose response it never acknowledges, or everything only at end of input.
ACKER = r"""
import json, os, sys
from addon.wire import Begin, Deframer, Durable, End, ToRecorder, frame
rules = json.loads(sys.argv[1])
never, request_only = set(rules.get("never", [])), set(rules.get("request_only", []))
deframer = Deframer(ToRecorder)
requests, responses = [], []
def answer():
    if requests or responses:
        os.write(1, frame(Durable(requests[:], responses[:])))
        requests.clear(); responses.clear()
while data := os.read(0, 1 << 16):
    for m in deframer.feed(data):
        key = getattr(m, "request_id", None)
        if key is None or key in never:
            continue
        if isinstance(m, Begin) and not m.recorded:
            requests.append(key)
        elif isinstance(m, End) and key not in request_only:
            responses.append(key)
    if not rules.get("at_exit"):
        answer()
answer()
"""


class Acker(sinks.ProcessSink):
    def __init__(self, **rules: Any) -> None:
        super().__init__(env=os.environ, on_reply=lambda m: None, on_death=self.died)
        self.rules = rules
        self.deaths: list[tuple[int, list[ToRecorder]]] = []

    def command(self) -> list[str]:
        return [sys.executable, "-c", ACKER, json.dumps(self.rules)]

    def died(self, lost: int, waiting: list[ToRecorder]) -> None:
        self.deaths.append((lost, waiting))


def begin(key: str, *, status_code: int | None = None, body: bytes = b"{}") -> Begin:
    return Begin(
        request_id=key, provider="openai", endpoint="chat", path="/v1/chat/completions",
        agent_id="agt_t", agent_name="t", identity_kind="header", source_ip=None,
        session_id="ses_t", started=1.0, body=body, request_bytes=len(body),
        status_code=status_code,
    )  # fmt: skip


def end(key: str) -> End:
    return End(request_id=key, status_code=200, end=2.0, response_id=f"{key}_r")


def streamed(key: str, *chunks: bytes) -> list[ToRecorder]:
    return [
        begin(key),
        Stream(key, "text/event-stream", None),
        *(Chunk(key, c) for c in chunks),
        end(key),
    ]


async def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the loop run until ``cond()`` holds (the sink works from loop callbacks)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def frames_of(msgs: list[ToRecorder]) -> int:
    return sum(len(frame(m)) for m in msgs)


def kill(sink: sinks.ProcessSink) -> None:
    assert sink.proc is not None
    os.kill(sink.proc.pid, signal.SIGKILL)


def test_a_call_is_kept_until_its_last_event_is_durable_then_let_go() -> None:
    async def run() -> None:
        sink = Acker(request_only=["evt_b"], never=["evt_c"]).start(asyncio.get_running_loop())
        for m in [*streamed("evt_a", b"x" * 100, b"y"), *streamed("evt_b", b"z"), begin("evt_c")]:
            sink.send(m)
        sink.send(begin("evt_refused", status_code=403))  # its only event is its request event
        sink.send(begin("evt_last"))
        sink.send(end("evt_last"))
        await until(lambda: "evt_last" not in sink.held.calls)  # answers come in order
        assert list(sink.held.calls) == ["evt_b", "evt_c"]
        assert sink.held.calls["evt_b"].request and not sink.held.calls["evt_b"].response
        assert sink.retained_bytes == frames_of([*streamed("evt_b", b"z"), begin("evt_c")])
        assert sink.backlog_bytes == 0  # all of it is in the pipe: kept all the same
        sink.close()

    asyncio.run(run())


def test_a_dead_recorder_hands_over_every_call_not_durable_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sight = AgentSeen("agt_t", "t", None, "header", datetime(2026, 1, 2, tzinfo=UTC))

    async def run() -> Acker:
        sink = Acker(request_only=["evt_b", "evt_c"], never=["evt_e"])
        sink.start(asyncio.get_running_loop())
        for m in [
            *streamed("evt_a", b"1", b"2"),  # made durable: let go
            *streamed("evt_b", b"3"),  # request durable, response not
            begin("evt_c"), Stream("evt_c", "text/event-stream", None), Chunk("evt_c", b"4"),
            begin("evt_d", status_code=429),  # durable
            begin("evt_e"), end("evt_e"),  # nothing durable
            begin("evt_z"), end("evt_z"),
        ]:  # fmt: skip
            sink.send(m)
        await until(lambda: "evt_z" not in sink.held.calls)
        monkeypatch.setattr(process, "FLUSH_DELAY", 60.0)  # what follows stays in the outbox
        sink.send(sight)
        sink.send(Chunk("evt_c", b"5"))  # a stream still going
        kill(sink)
        await until(lambda: sink.deaths)
        assert sink.proc is not None
        sink.proc.wait(5)
        return sink

    sink = asyncio.run(run())
    ((lost, waiting),) = sink.deaths
    assert lost == 0
    assert waiting == [
        sight,  # not kept once in the pipe, but this one never got there
        replace(begin("evt_b"), resent=True, recorded=True),
        Stream("evt_b", "text/event-stream", None),
        Chunk("evt_b", b"3"),
        end("evt_b"),
        replace(begin("evt_c"), resent=True, recorded=True),
        Stream("evt_c", "text/event-stream", None),
        Chunk("evt_c", b"4"),
        Chunk("evt_c", b"5"),
        replace(begin("evt_e"), resent=True, recorded=False),
        end("evt_e"),
    ]
    assert sink.retained_bytes == 0 and sink.retained_calls == 0


def test_past_the_bound_a_call_goes_without_a_copy_and_is_counted_exactly_if_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one: list[ToRecorder] = [begin("evt_1", body=b"a" * 500), end("evt_1")]
    monkeypatch.setattr(
        retention, "MAX_RETAINED_BYTES", frames_of(one) + len(frame(begin("evt_2"))) + 10
    )

    async def run() -> Acker:
        sink = Acker(never=["evt_1", "evt_2", "evt_3", "evt_4"]).start(asyncio.get_running_loop())
        for m in one:
            sink.send(m)
        sink.send(begin("evt_2"))  # fits
        sink.send(Chunk("evt_2", b"b" * 100))  # does not: evt_2 goes on without its copy
        assert sink.unguarded == 1 and sink.retained_bytes == frames_of(one)
        sink.send(end("evt_2"))  # not kept either
        sink.send(begin("evt_3", status_code=403))  # fits again: evt_2's copy was let go
        sink.send(begin("evt_4", body=b"c" * 500))  # does not
        assert sink.unguarded == 2
        assert sink.retained_bytes == frames_of([*one, begin("evt_3", status_code=403)])
        await until(lambda: sink.backlog_bytes == 0)
        kill(sink)
        await until(lambda: sink.deaths)
        assert sink.proc is not None
        sink.proc.wait(5)
        return sink

    sink = asyncio.run(run())
    ((lost, waiting),) = sink.deaths
    # evt_2's two events; evt_4's two (its End, when it comes, has no Begin to go with)
    assert lost == 4 and sink.lost_keys == ["evt_2", "evt_4"]
    assert [(type(m).__name__, m.request_id) for m in waiting if isinstance(m, Begin | End)] == [
        ("Begin", "evt_1"), ("End", "evt_1"), ("Begin", "evt_3"),
    ]  # fmt: skip


def test_close_waits_for_the_last_acknowledgements() -> None:
    async def run() -> Acker:
        sink = Acker(at_exit=True).start(asyncio.get_running_loop())
        for i in range(50):
            for m in streamed(f"evt_{i}", b"x" * 1000):
                sink.send(m)
        sink.close()
        return sink

    sink = asyncio.run(run())
    assert sink.unacknowledged == 0 and sink.retained_calls == 0 and sink.deaths == []


# -- the real recorder process: answers once the writer commits or spools ------------------------


@pytest.mark.parametrize("database", ["up", "away"])
def test_the_recorder_acknowledges_what_it_committed_or_spooled(
    database: str, dsn: str, tmp_path: Path
) -> None:
    url = dsn if database == "up" else "postgresql://127.0.0.1:1/none"
    env = os.environ | {"GOVRIX_HOME": str(tmp_path), "GOVRIX_DATABASE_URL": url}
    replies: list[ToProxy] = []

    async def run() -> sinks.ProcessSink:
        sink = sinks.ProcessSink(env=env, on_reply=replies.append, on_death=lambda n, w: None)
        sink.start(asyncio.get_running_loop())
        for m in [*streamed("evt_s1", b"data: {}\n\n"), begin("evt_s2", status_code=403)]:
            sink.send(m)
        if database == "up":  # committed: acknowledged while it runs
            await until(lambda: sink.retained_calls == 0, timeout=30)
        sink.close()  # away: spooled at the latest when the recorder stops
        return sink

    sink = asyncio.run(run())
    assert sink.unacknowledged == 0 and sink.retained_calls == 0
    if database == "up":
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT id FROM events ORDER BY id").fetchall()
        assert rows == [("evt_s1",), ("evt_s1_r",), ("evt_s2",)]
    else:
        spool = Spool(tmp_path / "spool" / "events.spool")
        try:
            spooled = sorted(ev.id for _, batch in spool.records() for ev in batch)
        finally:
            spool.close()
        assert spooled == ["evt_s1", "evt_s1_r", "evt_s2"]


# -- what a recorder does with a resent call ----------------------------------------------------


class ListWriter:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def enqueue(self, ev: Event) -> None:
        self.events.append(ev)


def test_resent_captures_fork_off_the_chain_and_a_recorded_request_is_not_written_again() -> None:
    acks = Acks()
    rec = Recorder(config_mod.load({}), reply=lambda _msg: None, acks=acks)
    writer = ListWriter()
    rec.writer = writer  # type: ignore[assignment]
    rec.handle(begin("evt_1"))
    rec.handle(end("evt_1"))
    head = writer.events[-1]
    rec.handle(replace(begin("evt_2"), resent=True))  # maybe stored already: a fork
    rec.handle(replace(begin("evt_3"), resent=True, recorded=True))  # stored: only reopened
    rec.handle(end("evt_3"))
    rec.handle(begin("evt_4"))
    got = {ev.id: ev for ev in writer.events}
    assert list(got) == ["evt_1", "evt_1_r", "evt_2", "evt_3_r", "evt_4"]
    genesis = lineage.genesis("ses_t")
    assert got["evt_2"].prev_hash == got["evt_3_r"].prev_hash == genesis
    assert got["evt_3_r"].parent_id == "evt_3"
    assert got["evt_4"].prev_hash == head.lineage_hash  # the forks never became the head
    rows = [msgspec.to_builtins(ev) | {"timestamp": ev.timestamp} for ev in writer.events]
    assert lineage.verify("ses_t", rows).valid
    # evt_2 was stored by the dead recorder: its duplicate is skipped, the chain still holds
    assert lineage.verify("ses_t", [r for r in rows if r["id"] != "evt_2"]).valid
    # every event is mapped back to its call; an End for an unknown call is let go at once
    acks.durable([ev.id for ev in writer.events])
    rec.handle(end("evt_unknown"))
    assert acks.take() == Durable(["evt_1", "evt_2", "evt_4"], ["evt_1", "evt_3", "evt_unknown"])
    assert acks.take() is None and acks.awaited == 0


def test_calls_still_open_when_the_recorder_stops_are_recorded_as_aborted() -> None:
    """The proxy went away (SIGKILL) mid-call: each request event still gets its response."""
    rec = Recorder(config_mod.load({}), reply=lambda _msg: None)
    writer = ListWriter()
    rec.writer = writer  # type: ignore[assignment]
    rec.handle(begin("evt_done"))
    rec.handle(end("evt_done"))
    rec.handle(begin("evt_open"))
    rec.handle(Stream("evt_open", "text/event-stream", None))
    rec.handle(Chunk("evt_open", b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'))
    rec.abort_open()
    last = writer.events[-1]
    assert [ev.id for ev in writer.events[:-1]] == ["evt_done", "evt_done_r", "evt_open"]
    assert last.parent_id == "evt_open" and last.direction == "response"
    assert last.error is not None and last.error.startswith("aborted")
    assert last.status_code is None
    rec.abort_open()  # nothing open any more
    assert len(writer.events) == 4


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("llm.internal", "llm.internal"),
        ("llm.internal:8000", "llm.internal"),
        ("10.0.0.5:443", "10.0.0.5"),
        ("[::1]:8000", None),  # IPv6: mitmproxy's parser
        ("xn--bcher-kva.example", None),  # IDNA: mitmproxy's parser
        ("bücher.example", None),
        ("llm.internal:http", None),
        ("", None),
        (None, None),
    ],
)
def test_host_header_fast_path(authority: str | None, host: str | None) -> None:
    assert host_name(authority) == host
