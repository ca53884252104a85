"""``ProcessSink``: the recorder as a child process (``python -m addon.recorder``), fed through its
stdin from the event loop without ever blocking it.

Captures wait in an outbox and leave in one ``writev`` per ``FLUSH_DELAY`` (or at once past
``FLUSH_BYTES``); answers are read with ``add_reader``. Each call's frames are kept in
``held`` (``retention.py``) until the recorder says they are durable; at the child's death they go
to ``on_death`` for a successor. See the package docstring (``addon/sinks``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import msgspec

from addon.sinks.retention import KEYED, HeldCalls
from addon.wire import Deframer, Durable, Stats, ToProxy, ToRecorder, frame

log = logging.getLogger("govrix.channel")

ROOT = Path(__file__).resolve().parent.parent.parent
#: Past this many bytes waiting for a stuck recorder, new captures are dropped (counted, logged).
MAX_OUTBOX_BYTES = 256 * 1024 * 1024
#: Captures wait up to this long in the outbox so that one write carries many of them. A write
#: that wakes the recorder cost the loop 34-43 µs on the benchmark VM; written at each loop
#: iteration (two writes per request) that was about 30% of the addon's time on the loop at
#: concurrency 1. Nothing waits on the recorder's answers within milliseconds.
FLUSH_DELAY = 0.010
#: ... unless this many bytes are waiting: then they go at the next loop iteration.
FLUSH_BYTES = 256 * 1024


class ProcessSink:
    """The recorder as a child process, fed through its stdin; see the package docstring."""

    mode = "process"

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        on_reply: Callable[[ToProxy], None],
        on_death: Callable[[int, list[ToRecorder]], None],
        config_file: str | None = None,
    ) -> None:
        self.env = dict(env)
        self.on_reply = on_reply
        self.on_death = on_death
        self.config_file = config_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.sent = 0  # messages accepted
        self.written = 0  # messages wholly in the pipe
        self.handled = 0  # messages the child reported handled
        self.dropped = 0  # messages refused because the outbox was full
        self.unacknowledged = 0  # events not durable when close() gave up on the child
        #: At death: calls with events lost (sent without a copy), e.g. to release reservations.
        self.lost_keys: list[str] = []
        self.metrics = b""  # the child's latest metrics exposition
        self.dead = False
        self._frames: collections.deque[bytes] = collections.deque()
        self._head = 0  # bytes of the first frame already written
        self._backlog = 0
        #: Every call the recorder has not made durable, with copies of its frames.
        self.held = HeldCalls()
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._writing = False
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deframer = Deframer(ToProxy)
        self._in_fd = -1
        self._out_fd = -1

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "addon.recorder"]
        if self.config_file:
            cmd += ["--config", self.config_file]
        return cmd

    def start(self, loop: asyncio.AbstractEventLoop) -> Self:
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in_fd = self.proc.stdin.fileno()
        self._out_fd = self.proc.stdout.fileno()
        os.set_blocking(self._in_fd, False)
        os.set_blocking(self._out_fd, False)
        self._loop = loop
        loop.add_reader(self._out_fd, self._readable)
        log.info("recorder process started (pid %d)", self.proc.pid)
        return self

    # -- sending ------------------------------------------------------------------------------

    def send(self, msg: ToRecorder) -> None:
        if self.dead:  # a stale reference: the owner's current sink is another one
            self.dropped += 1
            log.error("capture sent to a recorder process that died: dropped (%d)", self.dropped)
            return
        data = frame(msg)
        if self._backlog + len(data) > MAX_OUTBOX_BYTES:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "recorder backlog full (%d bytes): %d captures dropped so far",
                    self._backlog,
                    self.dropped,
                )
            return
        if isinstance(msg, KEYED):
            self.held.hold(msg, data)
        self._frames.append(data)
        self._backlog += len(data)
        self.sent += 1
        if self._writing or self._loop is None:
            return  # the pipe is full: _writable takes it from here
        if self._backlog >= FLUSH_BYTES:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)
        elif self._timer is None and not self._scheduled:
            self._timer = self._loop.call_later(FLUSH_DELAY, self._flush)

    @property
    def backlog_bytes(self) -> int:
        return self._backlog

    @property
    def retained_bytes(self) -> int:
        """Bytes kept for calls the recorder has not made durable (the outbox included)."""
        return self.held.size

    @property
    def retained_calls(self) -> int:
        return len(self.held)

    @property
    def unguarded(self) -> int:
        """Calls sent without a copy kept (``retention.MAX_RETAINED_BYTES``)."""
        return self.held.unguarded

    def _flush(self) -> None:
        self._scheduled = False
        self._timer = None
        if self.dead or self._writing:
            return
        if not self._write() and self._loop is not None and not self.dead:
            self._writing = True
            self._loop.add_writer(self._in_fd, self._writable)

    def _writable(self) -> None:
        if self._write() and self._loop is not None:
            self._writing = False
            self._loop.remove_writer(self._in_fd)

    def _write_at_close(self) -> bool:
        try:
            self._write()
        except Exception:
            return False
        return not self.dead

    def _write(self) -> bool:
        """Write what the pipe takes; True when the outbox is empty."""
        frames = self._frames
        while frames:
            bufs: list[Any] = [frames[i] for i in range(min(len(frames), 512))]
            if self._head:
                bufs[0] = memoryview(bufs[0])[self._head :]
            try:
                n = os.writev(self._in_fd, bufs)
            except BlockingIOError:
                return False
            except OSError as e:
                if self._closing:
                    log.error(
                        "recorder process gone at shutdown (%s): %d captures not taken",
                        e,
                        len(frames),
                    )
                    frames.clear()
                    self._head = 0
                    self._backlog = 0
                else:
                    self._died(f"writing to it failed: {e}")
                return True
            self._backlog -= n
            total = n
            while n and frames:
                left = len(frames[0]) - self._head
                if n >= left:
                    n -= left
                    frames.popleft()
                    self._head = 0
                    self.written += 1
                else:
                    self._head += n
                    n = 0
            if total < sum(len(b) for b in bufs):
                return False
        return True

    # -- answers ------------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._out_fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError as e:
            self._died(f"reading from it failed: {e}")
            return
        if not data:
            self._died("it closed its output")
            return
        self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        try:
            msgs = self._deframer.feed(data)
        except msgspec.DecodeError:
            log.exception("malformed answer from the recorder")
            return
        for msg in msgs:
            if isinstance(msg, Durable):
                self.held.durable(msg)
            elif isinstance(msg, Stats):
                self.handled = msg.handled
                self.metrics = msg.metrics
            else:
                self.on_reply(msg)

    def _detach(self) -> None:
        """Stop watching the pipes from the event loop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._out_fd)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._in_fd)

    def _last_answers(self) -> None:
        """Read what the child said before it went (acknowledgements spare resends)."""
        for _ in range(64):  # what a pipe holds; a child that is still talking is killed next
            try:
                data = os.read(self._out_fd, 1 << 16)
            except OSError:
                return
            if not data:
                return
            self._dispatch(data)

    def _died(self, why: str) -> None:
        if self.dead or self._closing:
            return
        self.dead = True
        self._detach()
        self._last_answers()
        code = self.proc.poll() if self.proc is not None else None
        waiting, lost = self._unacknowledged()
        log.error(
            "recorder process died (%s, exit code %s): %d captures of %d calls it had not made "
            "durable go to its successor; %d events are lost",
            why,
            code,
            sum(isinstance(m, KEYED) for m in waiting),
            len(self.held),
            lost,
        )
        self._frames.clear()
        self._head = 0
        self._backlog = 0
        self.held.clear()
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.kill()
            self._close_pipes()
        self.on_death(lost, waiting)

    def _unacknowledged(self) -> tuple[list[ToRecorder], int]:
        """What a successor needs, in order, and how many events nothing can bring back."""
        # AgentSeen and Score still waiting for the pipe (once written, they are not kept)
        waiting: list[ToRecorder] = [
            m for m in Deframer(ToRecorder).feed(b"".join(self._frames)) if not isinstance(m, KEYED)
        ]
        calls, lost, lost_keys = self.held.handover()
        self.lost_keys += lost_keys
        return waiting + calls, lost

    def _close_pipes(self) -> None:
        assert self.proc is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()

    # -- stopping -----------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Hand over what waits, let the child drain its writer, collect its acknowledgements.

        Events whose calls the child did not acknowledge within ``timeout`` (it died, or its
        writer could not even spool them) are counted in ``unacknowledged`` and logged."""
        if self.proc is None or self.dead:
            return
        self._closing = True
        self._detach()
        deadline = time.monotonic() + timeout
        stdin_open = True
        while True:
            if stdin_open and not self._frames:
                with contextlib.suppress(OSError):
                    assert self.proc.stdin is not None
                    self.proc.stdin.close()  # end of input: the child drains and exits
                stdin_open = False
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wfds = [self._in_fd] if stdin_open else []
            try:
                readable, writable, _ = select.select([self._out_fd], wfds, [], left)
            except (OSError, ValueError):
                break
            if writable and not self._write_at_close():
                break
            if readable:
                try:
                    data = os.read(self._out_fd, 1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break  # the child is done
                self._dispatch(data)
        if self._frames:
            log.error("recorder process did not take %d captures at shutdown", len(self._frames))
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("recorder process did not finish within %.0fs: killed", timeout)
            self.proc.kill()
            self.proc.wait(5)
        self._close_pipes()
        self.unacknowledged = self.held.missing()
        if self.unacknowledged:
            log.error(
                "recorder process did not make %d events of %d calls durable at shutdown: "
                "they are lost",
                self.unacknowledged,
                len(self.held),
            )
