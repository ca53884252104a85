"""The writer's counters: what became of every event it was handed (also exported as metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class WriterStats:
    """Counters that tell the story of every event (also exported as metrics).

    Once the writer has drained, with nothing ``rejected`` or ``dropped``, every event is counted
    once: ``written + replayed + already_present == enqueued`` (tests/test_writer.py counts it).
    """

    enqueued: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    #: spooled events a replay found in the database already (their commit had gone through)
    already_present: int = 0
    dropped: int = 0
    rejected: int = 0
    batches: int = 0
    failed_batches: int = 0
    reconnects: int = 0
    scores_written: int = 0
    scores_dropped: int = 0
    cpu_seconds: float = 0.0
    last_error: str | None = None
    depth: Callable[[], int] = field(default=lambda: 0, repr=False)
    spool_bytes: Callable[[], int] = field(default=lambda: 0, repr=False)
    #: ``time.monotonic()`` since which events have waited with no batch committed or spooled
    #: (``None``: nothing waiting); set by the writer, read by :meth:`lag`.
    waiting_since: float | None = None

    def lag(self) -> float:
        """Seconds the writer has held events without settling any (0 when none wait): a stuck
        or slow database shows here before the buffer fills."""
        since = self.waiting_since
        if since is None or self.depth() == 0:
            return 0.0
        return max(0.0, time.monotonic() - since)

    def snapshot(self) -> dict[str, float | int | str | None]:
        return {
            "enqueued": self.enqueued,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "already_present": self.already_present,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "reconnects": self.reconnects,
            "scores_written": self.scores_written,
            "scores_dropped": self.scores_dropped,
            "buffer_depth": self.depth(),
            "spool_bytes": self.spool_bytes(),
            "lag_seconds": round(self.lag(), 3),
            "cpu_seconds": self.cpu_seconds,
            "last_error": self.last_error,
        }
