"""The recorder's keeper: starts it, restarts it when it dies, and is the one way captures leave.

By default the recorder is a child process (``ProcessSink``); if it dies, a new one is started
and handed every capture the old one had not made durable (``addon/sinks/``). After
``MAX_RESPAWNS`` deaths within ``RESPAWN_WINDOW`` seconds (a capture that crashes it every time?)
the proxy records in-process (``InlineSink``) until it is restarted. ``GOVRIX_RECORDER=inline``
and offline replay record in-process from the start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from addon import config as config_mod
from addon import metrics
from addon.mcp import InlineScorer
from addon.policy import PolicyStore
from addon.recorder import FLOW_SALT_ENV, Recorder
from addon.sinks import InlineSink, ProcessSink
from addon.wire import ToProxy, ToRecorder

log = logging.getLogger("govrix.supervisor")

MAX_RESPAWNS = 3
RESPAWN_WINDOW = 300.0


class Supervisor:
    """Owns the current sink; ``send`` hands a capture to whichever recorder is alive."""

    def __init__(
        self,
        settings: config_mod.Settings,
        *,
        on_reply: Callable[[ToProxy], None],
        on_lost: Callable[[list[str]], None] | None = None,
        scorer: InlineScorer,
        policies: PolicyStore,
        config_file: str | None = None,
        replay: bool = False,
    ) -> None:
        self.settings = settings
        self.on_reply = on_reply
        self.on_lost = on_lost
        self.scorer = scorer
        self.policies = policies
        self.config_file = config_file
        self.replay = replay
        self.database_url = settings.database_url
        self.sink: ProcessSink | InlineSink | None = None
        self.lost = 0  # events lost with recorder processes that died
        self._dropped = 0  # captures dropped by sinks that are gone (outbox full)
        self._unguarded = 0  # calls sent without a copy by sinks that are gone
        self._respawns: list[float] = []

    @property
    def mode(self) -> str:
        return self.sink.mode if self.sink is not None else "none"

    @property
    def inline(self) -> bool:
        """The recorder shares this process (and so the scorer's history)."""
        return isinstance(self.sink, InlineSink)

    @property
    def backlog_bytes(self) -> int:
        return self.sink.backlog_bytes if self.sink is not None else 0

    @property
    def lost_total(self) -> int:
        dropped = self.sink.dropped if isinstance(self.sink, ProcessSink) else 0
        return self.lost + self._dropped + dropped

    @property
    def unguarded(self) -> int:
        now = self.sink.unguarded if isinstance(self.sink, ProcessSink) else 0
        return self._unguarded + now

    @property
    def retained_bytes(self) -> int:
        return self.sink.retained_bytes if self.sink is not None else 0

    def start(self) -> Supervisor:
        self.sink = self._new_sink()
        return self

    def send(self, msg: ToRecorder) -> None:
        assert self.sink is not None, "Supervisor.start() first"
        self.sink.send(msg)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def _new_sink(self) -> ProcessSink | InlineSink:
        s = self.settings
        if s.recorder == "process" and not self.replay:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                env = dict(os.environ)
                env["GOVRIX_HOME"] = str(s.home)
                env[FLOW_SALT_ENV] = self.scorer.flow_salt.hex()
                if self.database_url:
                    env["GOVRIX_DATABASE_URL"] = self.database_url
                if s.policy_file is not None:
                    env["GOVRIX_POLICY_FILE"] = str(s.policy_file.resolve())
                sink = ProcessSink(
                    env=env,
                    on_reply=self.on_reply,
                    on_death=self._on_death,
                    config_file=self.config_file,
                )
                try:
                    return sink.start(loop)
                except OSError as e:
                    log.error("cannot start the recorder process (%s): recording inline", e)
        return self._inline_sink()

    def _inline_sink(self) -> InlineSink:
        recorder = Recorder(
            self.settings,
            reply=self.on_reply,
            database_url=self.database_url,
            scorer=self.scorer,
            policies=self.policies,
        ).start()
        return InlineSink(recorder, deferred=not self.replay)

    def _on_death(self, lost: int, waiting: list[ToRecorder]) -> None:
        """Start a new recorder process, or record in this one if they keep dying; either way
        starting with what the dead one had not made durable."""
        self.lost += lost
        old = self.sink
        if isinstance(old, ProcessSink):
            self._dropped += old.dropped
            self._unguarded += old.unguarded
            if old.lost_keys and self.on_lost is not None:
                self.on_lost(list(old.lost_keys))  # no Settle will come for these
        now = time.monotonic()
        self._respawns = [t for t in self._respawns if now - t < RESPAWN_WINDOW]
        sink: ProcessSink | InlineSink | None = None
        if len(self._respawns) < MAX_RESPAWNS:
            self._respawns.append(now)
            sink = self._new_sink()
            if isinstance(sink, ProcessSink):
                log.warning(
                    "recorder process restarted (%d of %d allowed within %.0f s)",
                    len(self._respawns),
                    MAX_RESPAWNS,
                    RESPAWN_WINDOW,
                )
        if sink is None:
            log.error(
                "recorder process died %d times within %.0f s: recording in the proxy process "
                "from now on (restart the proxy to bring it back)",
                MAX_RESPAWNS + 1,
                RESPAWN_WINDOW,
            )
            sink = self._inline_sink()
        if isinstance(sink, InlineSink):
            metrics.REMOTE.clear()  # this process's own registry counts from now on
        self.sink = sink
        for msg in waiting:
            sink.send(msg)

    def export_metrics(self) -> None:
        live = metrics.LIVE
        live.gauges["govrix_recorder_backlog_bytes"] = (
            "Captures waiting for the recorder process to take them.",
            lambda: float(self.backlog_bytes),
        )
        live.counters["govrix_recorder_lost"] = (
            "Events that could not be recovered when a recorder process died, plus captures "
            "dropped because the outbox was full (see the log).",
            lambda: float(self.lost_total),
        )
        live.gauges["govrix_recorder_retained_bytes"] = (
            "Captures kept until the recorder says their events are durable.",
            lambda: float(self.retained_bytes),
        )
        live.counters["govrix_recorder_unguarded"] = (
            "Calls sent to the recorder without a kept copy (the retention bound was reached).",
            lambda: float(self.unguarded),
        )
        metrics.REMOTE.append(
            lambda: self.sink.metrics if isinstance(self.sink, ProcessSink) else b""
        )


__all__: list[Any] = ["Supervisor"]
