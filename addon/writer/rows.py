"""A batch of events as rows: the binary COPY, and the sessions' chain heads with the NOTIFY.

Binary COPY casts nothing, so every column's type is declared: ``PG_TYPES`` of ``addon/event.py``,
kept in step with ``Event``'s fields by a length assert there. Both ways into ``events`` (the
straight COPY of ``batch.py`` and the staging table of ``staging.py``) go through ``copy_rows``.
"""

from __future__ import annotations

import msgspec
import psycopg

from addon.event import COLUMNS, PG_TYPES, Event

COLS = ", ".join(f'"{c}"' for c in COLUMNS)
COPY_EVENTS = f"COPY events ({COLS}) FROM STDIN (FORMAT BINARY)"

# Chain heads and the NOTIFY in one statement: one round trip per batch fewer.
_UPSERT_SESSIONS = """
WITH up AS (
INSERT INTO sessions AS s (id, agent_id, started_at, last_event_at, event_count, head_seq, head_hash)
SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[],
                     %s::int8[], %s::int8[], %s::text[])
ON CONFLICT (id) DO UPDATE SET
    started_at    = least(s.started_at, EXCLUDED.started_at),
    last_event_at = greatest(s.last_event_at, EXCLUDED.last_event_at),
    event_count   = s.event_count + EXCLUDED.event_count,
    head_seq      = CASE WHEN EXCLUDED.head_seq > s.head_seq THEN EXCLUDED.head_seq ELSE s.head_seq END,
    head_hash     = CASE WHEN EXCLUDED.head_seq > s.head_seq THEN EXCLUDED.head_hash ELSE s.head_hash END
)
SELECT pg_notify('govrix_events', %s)
"""

_json_encoder = msgspec.json.Encoder()


def json_dumps(obj: object) -> bytes:
    """How the writer's connection encodes ``jsonb`` parameters (``set_json_dumps``)."""
    return _json_encoder.encode(obj)


def copy_rows(cur: psycopg.Cursor[tuple[object, ...]], statement: str, batch: list[Event]) -> None:
    """One ``COPY ... FROM STDIN (FORMAT BINARY)`` of ``batch``, columns in ``Event`` order."""
    astuple = msgspec.structs.astuple
    with cur.copy(statement) as copy:
        copy.set_types(PG_TYPES)
        for ev in batch:
            copy.write_row(astuple(ev))


def upsert_sessions(cur: psycopg.Cursor[tuple[object, ...]], batch: list[Event]) -> None:
    """Count the inserted ``batch`` into its sessions, move their chain heads, NOTIFY its max id."""
    heads: dict[str, list[object]] = {}
    for ev in batch:
        h = heads.get(ev.session_id)
        if h is None:
            heads[ev.session_id] = [
                ev.agent_id,
                ev.timestamp,
                ev.timestamp,
                1,
                ev.seq,
                ev.lineage_hash,
            ]
            continue
        h[3] = int(h[3]) + 1  # type: ignore[call-overload]
        if ev.timestamp < h[1]:  # type: ignore[operator]
            h[1] = ev.timestamp
        if ev.timestamp > h[2]:  # type: ignore[operator]
            h[2] = ev.timestamp
        if ev.seq > h[4]:  # type: ignore[operator]
            h[4], h[5] = ev.seq, ev.lineage_hash
    cols: list[list[object]] = [list(c) for c in zip(*heads.values(), strict=True)]
    max_id = max(ev.id for ev in batch)
    cur.execute(_UPSERT_SESSIONS, (list(heads), *cols, max_id))
