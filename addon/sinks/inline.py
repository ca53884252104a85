"""``InlineSink``: the recorder in the proxy's own process (offline replay, ``GOVRIX_RECORDER=
inline``, or after recorder processes kept dying). Deferred, a message is handled right after
the current hook returns (``call_soon``), so the hook itself does not wait for the recording."""

from __future__ import annotations

import asyncio
from typing import Any

from addon.wire import ToRecorder


class InlineSink:
    """The recorder in this process."""

    mode = "inline"

    def __init__(self, recorder: Any, *, deferred: bool) -> None:
        self.recorder = recorder
        self.deferred = deferred
        self._queue: list[ToRecorder] = []
        self._scheduled = False

    def send(self, msg: ToRecorder) -> None:
        if not self.deferred:
            self.recorder.handle(msg)
            return
        self._queue.append(msg)
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._drain()
                return
            self._scheduled = True
            loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for msg in queue:
            self.recorder.handle(msg)

    @property
    def backlog_bytes(self) -> int:
        return 0

    @property
    def retained_bytes(self) -> int:
        return 0  # the recorder shares this process: nothing to hand to a successor

    def close(self, timeout: float = 30.0) -> None:
        self._drain()
        self.recorder.stop()
