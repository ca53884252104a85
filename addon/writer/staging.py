"""The idempotent way into ``events``: through the ``govrix_stage`` temp table, ``ON CONFLICT DO
NOTHING``, for spool records being replayed and for batches the straight COPY refused (resends,
bad rows); a batch refused as a whole is settled row by row, and a row that still fails goes to
the dead-letter file.

Only rows really inserted count towards the ``sessions`` table. What a batch's outcome means
(counted as written, replayed or already present; told to ``on_durable``; spooled when the
connection broke) is the writer's (``batch.py``); ``psycopg.OperationalError`` is raised to it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import psycopg

from addon.event import Event
from addon.sanitize import sanitized_copy
from addon.writer.rows import COLS, copy_rows, upsert_sessions
from addon.writer.stats import WriterStats

log = logging.getLogger("govrix.writer")

#: Run once per connection.
CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS govrix_stage "
    "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY_STAGE = f"COPY govrix_stage ({COLS}) FROM STDIN (FORMAT BINARY)"
# Only rows that were really inserted count towards the sessions table.
_MERGE_STAGE = f"""
WITH ins AS (
    INSERT INTO events ({COLS}) SELECT {COLS} FROM govrix_stage
    ON CONFLICT DO NOTHING
    RETURNING id, agent_id, session_id, "timestamp", seq, lineage_hash
)
SELECT id, agent_id, session_id, "timestamp", seq, lineage_hash FROM ins
"""


def stage_merge(conn: psycopg.Connection[tuple[object, ...]], batch: list[Event]) -> int:
    """Insert ``batch`` skipping rows stored already, in one transaction; how many were new."""
    with conn.transaction(), conn.cursor() as cur:
        copy_rows(cur, _COPY_STAGE, batch)
        rows = cur.execute(_MERGE_STAGE).fetchall()
        ids = {r[0] for r in rows}
        fresh = [ev for ev in batch if ev.id in ids]
        if fresh:
            upsert_sessions(cur, fresh)
    return len(fresh)


def settle_row(conn: psycopg.Connection[tuple[object, ...]], ev: Event) -> int:
    """One row on its own; text PostgreSQL cannot store is escaped, never dead-lettered.

    The recorder sanitises every event before it is chained (addon/sanitize.py), so this only
    meets one that was not (a spool written by an older version): it is stored escaped and
    flagged in ``sanitized``, and its lineage hash, taken over the raw text, shows the change.
    """
    try:
        return stage_merge(conn, [ev])
    except (psycopg.DataError, ValueError):
        fixed = sanitized_copy(ev)
        if fixed is None:
            raise
        log.warning("event %s: text escaped to be storable after it was chained", ev.id)
        return stage_merge(conn, [fixed])


class DeadLetter:
    """``deadletter.jsonl``: rows PostgreSQL refused for their content, one JSON line each."""

    def __init__(self, path: Path, stats: WriterStats) -> None:
        self.path = path
        self.stats = stats

    def keep(self, ev: Event, why: str) -> bool:
        """Keep a row PostgreSQL refused in the dead-letter file; False when that failed too."""
        self.stats.rejected += 1
        log.error("event %s rejected by PostgreSQL: %s (kept in %s)", ev.id, why, self.path)
        try:
            with open(self.path, "ab") as f:
                entry = {"error": why, "event": sanitized_copy(ev) or ev}  # a surrogate: no JSON
                f.write(msgspec.json.encode(entry) + b"\n")
        except OSError as e:
            self.stats.dropped += 1
            log.critical("DROPPED event %s: dead letter write failed: %s", ev.id, e)
            return False
        return True


def settle_rows(
    conn: psycopg.Connection[tuple[object, ...]], batch: list[Event], deadletter: DeadLetter
) -> tuple[int, int, set[str]]:
    """A batch refused as a whole, row by row: ``(inserted, refused, lost)``, ``lost`` the ids
    of refused rows the dead-letter file could not take either. Raises
    ``psycopg.OperationalError`` when the connection breaks on the way."""
    inserted = 0
    refused = 0
    lost: set[str] = set()
    for ev in batch:
        try:
            inserted += settle_row(conn, ev)
        except psycopg.OperationalError:
            raise
        except (psycopg.Error, ValueError) as e:
            if not deadletter.keep(ev, str(e)):
                lost.add(ev.id)
            refused += 1
    return inserted, refused, lost
