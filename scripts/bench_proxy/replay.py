"""Conversations replayed through the real proxy, for the scorer's benchmarks (``bench attacks``).

A :class:`Case` is one agent's conversation: a system message, the user's prompt, the tools it
offers, and the tool calls the model makes in order, each with the tool's output. Replaying it
sends one OpenAI chat request per call through ``mitmdump -s addon/main.py`` (the configuration
``scripts/govrix up`` runs: the recorder process, the default settings, a scratch database): the
request holds the conversation so far (the prompt, the earlier calls and their results) and the
fake provider (:func:`start_scripted`, its own process) answers with that call, so the addon
scores it exactly as it scores a live model's tool call (``addon/recorder/tool_calls.py``).
Every case is its own agent (``X-Govrix-Agent``) and session (``X-Govrix-Session``), so the
history facts are the case's own earlier calls; its scores are read back from the ``actions``
and ``scores`` tables in arrival order and checked against the calls sent.

:func:`rescore` scores the same requests in this process through the same code path (the
proxy's request parser, ``conversation_of``, ``InlineScorer.score_tool_call``) to time one score
(the proxy records no per-score time), and its scores are compared with the stored ones.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.process
import multiprocessing.synchronize
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from .client import API_KEY, PATH

#: The header that tells the fake provider which scripted answer a request gets. Any header but
#: ``x-govrix-*`` reaches the upstream; the addon records no header values.
REPLY_HEADER = "x-bench-reply"
MODEL = "gpt-4o-2024-05-13"


@dataclass(frozen=True)
class Step:
    """One tool call the model makes and what the tool returned. `label`: ``benign`` and
    ``harmful`` are measured; anything else (``user``, ``attack_read``) is context only."""

    function: str
    args: dict[str, Any]
    output: str
    label: str


@dataclass(frozen=True)
class Case:
    """One conversation. `key` names its agent and session (letters, digits, ``-``, ``_``)."""

    key: str
    group: str
    prompt: str
    steps: tuple[Step, ...]
    system: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def session(self) -> str:
        return f"ses_bench_{self.key}"

    def messages(self, upto: int) -> list[dict[str, Any]]:
        """The chat messages the model has seen before making call `upto`."""
        out: list[dict[str, Any]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": self.prompt})
        for i, s in enumerate(self.steps[:upto]):
            call_id = f"call_{i}"
            out.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": s.function, "arguments": json.dumps(s.args)},
                        }
                    ],
                }
            )
            out.append({"role": "tool", "tool_call_id": call_id, "content": s.output})
        return out

    def body(self, upto: int) -> bytes:
        """The chat request that produced call `upto`."""
        doc: dict[str, Any] = {"model": MODEL, "messages": self.messages(upto)}
        if self.tools:
            doc["tools"] = list(self.tools)
        return msgspec.json.encode(doc)


def reply_id(case: Case, i: int) -> str:
    return f"{case.key}.{i}"


def replies(cases: Iterable[Case]) -> dict[str, dict[str, str]]:
    """What the fake provider answers to each request: the case's call, arguments as JSON text."""
    return {
        reply_id(c, i): {"name": s.function, "arguments": json.dumps(s.args)}
        for c in cases
        for i, s in enumerate(c.steps)
    }


# -- the fake provider --------------------------------------------------------------------------


def completion(n: int, call: dict[str, str] | None) -> bytes:
    """An OpenAI ``chat.completion`` whose message is `call` (or a short text when None)."""
    message: dict[str, Any] = {"role": "assistant", "content": "Done.", "refusal": None}
    if call is not None:
        message = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": f"call_r{n}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    doc = {
        "id": f"chatcmpl-bench{n:024d}",
        "object": "chat.completion",
        "created": 1735689600,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "stop" if call is None else "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 512, "completion_tokens": 24, "total_tokens": 536},
    }
    body = msgspec.json.encode(doc)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def header_value(head: bytes, name: bytes) -> bytes | None:
    """A header's value from a lower-cased request head, None when absent."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip() == name:
            return value.strip()
    return None


class _Scripted(asyncio.Protocol):
    """One keep-alive connection: each request gets the answer its reply header names."""

    def __init__(self, script: dict[str, dict[str, str]]) -> None:
        self.script = script
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.n = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end]).lower()
            length = int(header_value(head, b"content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            rid = header_value(head, REPLY_HEADER.encode())
            self.n += 1
            assert self.transport is not None
            self.transport.write(completion(self.n, self.script.get((rid or b"").decode())))


async def _serve(
    port: int, script: dict[str, dict[str, str]], ready: multiprocessing.synchronize.Event
) -> None:
    server = await asyncio.get_running_loop().create_server(
        lambda: _Scripted(script), "127.0.0.1", port, backlog=256
    )
    ready.set()
    async with server:
        await server.serve_forever()


def _run(port: int, script_path: Path, ready: multiprocessing.synchronize.Event) -> None:
    asyncio.run(_serve(port, json.loads(script_path.read_text(encoding="utf-8")), ready))


def start_scripted(port: int, script_path: Path) -> multiprocessing.process.BaseProcess:
    """The fake provider in its own (spawned) process on 127.0.0.1:`port`, answering from the
    JSON file of :func:`replies`; returns once it listens."""
    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    proc = mp.Process(
        target=_run, args=(port, script_path, ready), name="bench-scripted", daemon=True
    )
    proc.start()
    if not ready.wait(15):
        proc.terminate()
        raise RuntimeError("the scripted provider did not start")
    return proc


# -- sending ------------------------------------------------------------------------------------


def request(proxy_upstream: int, case: Case, i: int) -> bytes:
    """Call `i`'s request, absolute-form through the proxy, as its case's agent and session."""
    body = case.body(i)
    authority = f"127.0.0.1:{proxy_upstream}"
    head = (
        f"POST http://{authority}{PATH} HTTP/1.1\r\nHost: {authority}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"X-Govrix-Agent: bench-{case.key}\r\nX-Govrix-Session: {case.session}\r\n"
        f"{REPLY_HEADER}: {reply_id(case, i)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(header_value(head.lower(), b"content-length") or 0)
    return int(head[9:12]), await reader.readexactly(length)


async def send(
    cases: Sequence[Case], proxy_port: int, upstream_port: int, concurrency: int
) -> list[float]:
    """Every case's requests in order, `concurrency` cases at a time (one connection each);
    returns the round-trip ms of each request. A non-200 answer or one without the scripted
    call is an error: the proxy refused or did not reach the fake provider."""
    queue = list(reversed(cases))
    rtt: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        try:
            while queue:
                case = queue.pop()
                for i, s in enumerate(case.steps):
                    t0 = time.perf_counter()
                    writer.write(request(upstream_port, case, i))
                    status, body = await _read(reader)
                    rtt.append((time.perf_counter() - t0) * 1e3)
                    if status != 200 or s.function.encode() not in body:
                        raise RuntimeError(f"{reply_id(case, i)}: HTTP {status} {body[:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rtt


# -- reading back -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """A score the proxy stored for one call."""

    action: str
    score: int
    risk_level: str
    components: tuple[str, ...]


def stored_count(dsn: str, sessions: Sequence[str]) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM actions a JOIN scores s USING (customer_id, event_id)"
            " WHERE a.session_id = ANY(%s)",
            (list(sessions),),
        ).fetchone()
    return int(row[0]) if row else 0


def read_scores(dsn: str, cases: Sequence[Case], timeout: float = 120.0) -> dict[str, list[Stored]]:
    """Each case's stored scores in arrival order, once all calls sent are stored (or the
    timeout passes: the missing ones are then missing)."""
    sessions = [c.session for c in cases]
    expected = sum(len(c.steps) for c in cases)
    deadline = time.monotonic() + timeout
    while stored_count(dsn, sessions) < expected and time.monotonic() < deadline:
        time.sleep(0.25)
    out: dict[str, list[Stored]] = {s: [] for s in sessions}
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.session_id, a.action, s.score, s.risk_level, s.score_components"
            " FROM actions a JOIN scores s USING (customer_id, event_id)"
            " WHERE a.session_id = ANY(%s) ORDER BY a.seq",
            (sessions,),
        ).fetchall()
    for session, action, score, level, comps in rows:
        names = tuple(str(c.get("name", "")) for c in comps or [] if c.get("value"))
        out[session].append(Stored(action, int(score), str(level), names))
    return out


def check_order(case: Case, stored: Sequence[Stored]) -> list[Stored]:
    """The stored scores of `case` matched to its calls; raises when they do not line up."""
    if len(stored) != len(case.steps):
        raise RuntimeError(f"{case.key}: {len(case.steps)} calls sent, {len(stored)} scored")
    for s, row in zip(case.steps, stored, strict=True):
        if not row.action.startswith("tool:") or row.action.split(":")[1] != s.function:
            raise RuntimeError(f"{case.key}: expected {s.function}, stored {row.action}")
    return list(stored)


# -- the same requests scored in this process, timed --------------------------------------------


@dataclass(frozen=True)
class Timing:
    """In-process scores of every call, and ms per score (``Engine.score_with_facts`` alone,
    and the whole inline path of a tool call: parse + index the request, decode, score)."""

    scores: dict[str, list[int]]
    engine_ms: list[float]
    inline_ms: list[float]


def rescore(cases: Sequence[Case]) -> Timing:
    """Score every call as the recorder does, timing it (one warm-up pass first)."""
    from addon.mcp import InlineScorer
    from addon.providers import parse_request, provider_by_name
    from addon.trust import conversation_of
    from api.scoring import Engine

    openai = provider_by_name("openai")
    engine = Engine.load()
    engine_ms: list[float] = []
    inner = engine.score_with_facts

    def timed(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return inner(*args, **kw)
        finally:
            engine_ms.append((time.perf_counter_ns() - t0) / 1e6)

    engine.score_with_facts = timed  # type: ignore[method-assign]
    for measured in (False, True):
        scorer = InlineScorer(engine)
        engine_ms.clear()
        inline_ms: list[float] = []
        scores: dict[str, list[int]] = {}
        for case in cases:
            for i, s in enumerate(case.steps):
                t0 = time.perf_counter_ns()
                info = parse_request(openai, "chat.completions", PATH, case.body(i))
                _, result = scorer.score_tool_call(
                    event_id=f"{case.key}.{i}",
                    agent_id=f"bench-{case.key}",
                    session_id=case.session,
                    name=s.function,
                    arguments=json.dumps(s.args),
                    timestamp=datetime.now(UTC),
                    conversation=conversation_of(info),
                )
                inline_ms.append((time.perf_counter_ns() - t0) / 1e6)
                scores.setdefault(case.key, []).append(result.score)
        if measured:
            return Timing(scores, list(engine_ms), inline_ms)
    raise AssertionError("unreachable")


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) by nearest rank; NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p50_p99(samples: Sequence[float]) -> tuple[float, float]:
    return (statistics.median(samples) if samples else float("nan"), percentile(samples, 0.99))
