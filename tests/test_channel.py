"""The proxy's end of the recorder pipe (addon/channel.py) and the hot path's host helper."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest

from addon import channel
from addon.capture import Chunk, Deframer, ToRecorder
from addon.proxy import _host_name

# A stand-in recorder: keeps every byte it is sent, answers nothing, exits at end of input.
KEEP = "import sys, shutil; shutil.copyfileobj(sys.stdin.buffer, open(sys.argv[1], 'wb'))"


class Keeper(channel.ProcessSink):
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

    monkeypatch.setattr(channel.os, "writev", counting)
    return seen


def test_captures_of_consecutive_loop_iterations_share_one_write(
    tmp_path: Any, writes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "got"
    monkeypatch.setattr(channel, "FLUSH_DELAY", 0.5)  # far longer than 20 loop iterations take

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
    assert [m.key for m in got] == [f"evt_{i}" for i in range(20)]


def test_a_large_backlog_goes_at_the_next_iteration(tmp_path: Any, writes: list[int]) -> None:
    out = tmp_path / "got"

    async def run() -> None:
        sink = Keeper(str(out)).start(asyncio.get_running_loop())
        sink.send(Chunk("evt_small", b"x"))
        sink.send(Chunk("evt_big", b"x" * channel.FLUSH_BYTES))
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
    assert _host_name(authority) == host
