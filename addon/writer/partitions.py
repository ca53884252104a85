"""The ``events`` table's daily partitions: the days a batch needs, hourly upkeep, retention.

The SQL functions are ``govrix_ensure_partitions`` and ``govrix_drop_partitions_older_than``
(sql/). A connection error is not handled here: it goes up to the writer, which owns the
connection (``BatchWriter._lost``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, date

import psycopg

from addon.event import Event

log = logging.getLogger("govrix.writer")

#: Seconds between two rounds of upkeep (partitions ahead, retention).
MAINTENANCE_INTERVAL = 3600


class Partitions:
    """Which days' partitions this connection knows exist, and when upkeep is due."""

    def __init__(self, retention_days: int | None) -> None:
        self.retention_days = retention_days
        self._ok: set[date] = set()
        self._next_maintenance = 0.0

    def reset(self) -> None:
        """A new connection: check every day again, and run the upkeep at once."""
        self._ok.clear()
        self._next_maintenance = 0.0

    def forget(self) -> None:
        """A partition thought to exist is gone (dropped by retention, or by hand)."""
        self._ok.clear()

    def maintain(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Partitions for yesterday..+7 days, and retention, at start and hourly.

        Raises ``psycopg.OperationalError`` (the connection broke); other errors are logged."""
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + MAINTENANCE_INTERVAL
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT govrix_ensure_partitions("
                    "(now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7)"
                )
                if self.retention_days is not None:
                    dropped = conn.execute(
                        "SELECT govrix_drop_partitions_older_than(%s)", (self.retention_days,)
                    ).fetchall()
                    if dropped:
                        log.info("retention dropped partitions: %s", [r[0] for r in dropped])
        except psycopg.OperationalError:
            raise
        except psycopg.Error as e:
            log.error("partition maintenance failed: %s", e)

    def ensure_for(
        self, conn: psycopg.Connection[tuple[object, ...]], batch: Iterable[Event]
    ) -> None:
        """Create the partitions of the days in ``batch`` this connection has not seen yet."""
        days = {ev.timestamp.astimezone(UTC).date() for ev in batch}
        missing = days - self._ok
        if not missing:
            return
        with conn.transaction():
            conn.execute("SELECT govrix_ensure_partitions(%s, %s)", (min(missing), max(missing)))
        self._ok.update(missing)
