"""The recorder as a child process of mitmdump: ``python -m addon.recorder``.

It reads frames (``addon/wire.py``) on stdin, answers on stdout (budget settlements, tool
actions, which calls are durable, stats every second), logs to stderr, ignores SIGINT and stops
at end of input after draining its writer. ``addon/sinks`` (``ProcessSink``) is the other end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import time

from addon import config as config_mod
from addon import metrics
from addon.acks import Acks
from addon.recorder import Recorder
from addon.wire import Deframer, Stats, ToProxy, ToRecorder, frame

log = logging.getLogger("govrix.recorder")


def step_back(nice: int) -> None:
    """Give the CPU to the proxy's event loop, the agents and the upstreams first.

    Everything here can wait milliseconds; a request waiting for a core cannot. As a batch task
    (SCHED_BATCH: no wake-up preemption) at ``nice`` (default 10), this process runs when a core
    is free, which on a proxy host is most of the time, and never cuts into a request in flight.
    BENCHMARKS.md ("Proxy") measures what it changes at concurrency 1.
    If the host is saturated by other work, the backlog shows in ``govrix_recorder_backlog_bytes``;
    ``GOVRIX_RECORDER_NICE=0`` makes the recorder an ordinary process again. Set before the writer
    thread starts, which inherits it."""
    if nice <= 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        os.nice(nice)
    except (AttributeError, OSError) as e:  # not Linux, or a sandbox that forbids it
        log.warning(
            "recorder: cannot lower its CPU priority (%s); running as an ordinary process", e
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m addon.recorder", description=__doc__)
    ap.add_argument("--config", default="", help="the proxy's GOVRIX_CONFIG file, if any")
    ap.add_argument("--database-url", default="", help="where events go (default: settings)")
    args = ap.parse_args(argv)
    # The proxy decides when we stop (end of input); a Ctrl-C to the process group must not cut
    # the drain short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="govrix-recorder %(levelname)s %(name)s: %(message)s",
    )
    # stdout carries frames: keep stray prints of any library off it.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    in_fd = sys.stdin.fileno()

    def reply(msg: ToProxy) -> None:
        data = memoryview(frame(msg))
        try:
            while data:
                n = os.write(out_fd, data)
                data = data[n:]
        except OSError:  # the proxy is gone: keep draining into the database regardless
            pass

    # The writer thread makes events durable; this loop tells the proxy. A self-pipe wakes it
    # from select() as soon as there is something to tell (answers leave from this thread only).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def wake() -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(wake_w, b"!")

    def acknowledge() -> None:
        if (durable := acks.take()) is not None:
            reply(durable)

    settings = config_mod.load(config_file=args.config or None)
    step_back(settings.recorder_nice)
    acks = Acks(wake)
    rec = Recorder(
        settings, reply=reply, database_url=args.database_url or settings.database_url, acks=acks
    ).start()
    deframer = Deframer(ToRecorder)
    next_tick = 0.0
    try:
        while True:
            ready, _, _ = select.select([in_fd, wake_r], [], [], 0.5)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            if in_fd in ready:
                data = os.read(in_fd, 1 << 20)
                if not data:
                    break
                for msg in deframer.feed(data):
                    rec.handle(msg)
            acknowledge()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 1.0
                rec.tick()
                reply(Stats(rec.handled, _exposition()))
    finally:
        if deframer.pending:
            log.error("input ended inside a message (%d bytes): the proxy died", deframer.pending)
        rec.stop()  # the writer commits or spools what it holds: the last acknowledgements
        acknowledge()
        reply(Stats(rec.handled, _exposition()))
    return 0


def _exposition() -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(metrics.REGISTRY)


if __name__ == "__main__":
    raise SystemExit(main())
