"""The proxy -> recorder messages: framing survives any split of the byte stream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from addon.pii import Finding
from addon.wire import (
    AgentSeen,
    Begin,
    Chunk,
    Deframer,
    End,
    Settle,
    Stats,
    ToolHistory,
    ToProxy,
    ToRecorder,
    frame,
)


def messages() -> list[ToRecorder]:
    return [
        Begin(
            request_id="evt_1",
            provider="openai",
            endpoint="chat",
            path="/v1/chat/completions",
            agent_id="agt_1",
            agent_name="a",
            identity_kind="header",
            source_ip=None,
            session_id="ses_1",
            started=1.5,
            body=b'{"model":"x"}',
            request_bytes=13,
            findings=[Finding("email", 2, "$.messages[0].content")],
            policy_decisions=[{"phase": "request", "matched": ["r"]}],
            reserved=True,
        ),
        Chunk("evt_1", b"data: {}\n\n" * 1000),
        End(request_id="evt_1", status_code=200, body=None, end=2.5, first_byte=1.7),
        AgentSeen("agt_1", "a", "10.0.0.1", "header", datetime(2026, 1, 2, tzinfo=UTC)),
    ]


@pytest.mark.parametrize("step", [1, 3, 7, 4096, 1 << 20])
def test_any_split_gives_back_the_same_messages(step: int) -> None:
    sent = messages()
    stream = b"".join(frame(m) for m in sent)
    d = Deframer(ToRecorder)
    got: list[object] = []
    for i in range(0, len(stream), step):
        got += d.feed(stream[i : i + step])
    assert got == sent and d.pending == 0


def test_answers_decode_to_their_types() -> None:
    sent: list[ToProxy] = [
        Settle("evt_1", 120, 0.25),
        ToolHistory("agt_1", ["tool:x:call"]),
        Stats(7, b"# x\n"),
    ]
    d = Deframer(ToProxy)
    assert d.feed(b"".join(frame(m) for m in sent)) == sent


def test_an_incomplete_frame_waits() -> None:
    data = frame(Settle("k", 1, None))
    d = Deframer(ToProxy)
    assert d.feed(data[:-1]) == [] and d.pending == len(data) - 1
    assert d.feed(data[-1:]) == [Settle("k", 1, None)]
