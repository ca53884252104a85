"""SQL that writes for the scoring service: keys, actions with their history, scores (tables in
sql/005_scoring.sql). Reading scores back is score_queries.py. Literal SQL, `%s` parameters.

Every function takes an open connection and runs inside the caller's transaction, so the caller
decides what commits together (e.g. a score and the deletion of its queue row).
JSON goes in as text cast to jsonb and comes out as text decoded by msgspec, so this works on any
pool whatever its JSON adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg import AsyncConnection

from api.scoring import ActionEvent, Engine, HistoryFacts, HistoryQuery, ScoreResult

Conn = AsyncConnection[Any]

_ENCODER = msgspec.json.Encoder()


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the customer and tier of a valid API key."""

    key_id: str
    customer_id: str
    tier: str


class Inserted(msgspec.Struct, frozen=True):
    """A newly stored action: its arrival order and time (the reference for history)."""

    seq: int
    received_at: datetime


def _utc(ts: datetime | None) -> datetime | None:
    # Naive timestamps in events are taken as UTC, whatever the session time zone.
    return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts


# --- keys -----------------------------------------------------------------------------------


async def principal_for_hash(conn: Conn, key_hash: bytes) -> Principal | None:
    """The live (not revoked) key with this sha256 digest."""
    cur = await conn.execute(
        "SELECT id, customer_id, tier FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
        (key_hash,),
    )
    row = await cur.fetchone()
    return Principal(row[0], row[1], row[2]) if row else None


# --- actions and history ------------------------------------------------------------------

# History facts of one action, as SELECT columns. {seq} and {t} are replaced (at import, with
# constant SQL) by the action's arrival order and time: parameters for a queued action, the
# columns of the row being inserted for `POST /events`. Only actions before {seq} count; the
# activity rows give the last hour's count and the baseline hours before it.
_HISTORY_COLUMNS = """
    CASE WHEN %(server)s::text IS NULL THEN NULL ELSE NOT EXISTS (
        SELECT 1 FROM actions h WHERE h.customer_id = %(c)s AND h.agent_id = %(a)s
        AND h.server_key = %(server)s AND h.seq < {seq}) END,
    CASE WHEN %(resource)s::text IS NULL THEN NULL ELSE NOT EXISTS (
        SELECT 1 FROM actions h WHERE h.customer_id = %(c)s AND h.agent_id = %(a)s
        AND h.resource_key = %(resource)s AND h.seq < {seq}) END,
    (SELECT coalesce(sum(n), 0) FROM agent_activity WHERE customer_id = %(c)s
        AND agent_id = %(a)s AND minute > {t} - interval '1 hour' AND minute <= {t}),
    (SELECT coalesce(sum(n), 0) FROM agent_activity WHERE customer_id = %(c)s AND agent_id = %(a)s
        AND minute >= {t} - %(baseline)s * interval '1 hour' AND minute <= {t} - interval '1 hour'),
    (SELECT min(minute) FROM agent_activity WHERE customer_id = %(c)s AND agent_id = %(a)s
        AND minute >= {t} - %(baseline)s * interval '1 hour' AND minute <= {t} - interval '1 hour'),
    ARRAY(SELECT h.action FROM actions h WHERE h.customer_id = %(c)s AND h.agent_id = %(a)s
        AND h.seq < {seq} ORDER BY h.seq DESC LIMIT %(recent)s)
"""

_HISTORY = "SELECT " + _HISTORY_COLUMNS.replace("{seq}", "%(seq)s").replace("{t}", "%(t)s")

# One statement for `POST /events`: insert (nothing on a repeated id), count the activity, and
# read the history. The statement's snapshot does not hold its own inserts, so the history is
# exactly "before this action" and the last-hour count misses this action (added in Python).
_INSERT_WITH_HISTORY = (
    """
WITH ins AS (
    INSERT INTO actions (customer_id, event_id, agent_id, session_id, action, server_key,
                         resource_key, "timestamp", event)
    VALUES (%(c)s, %(e)s, %(a)s, %(session)s, %(action)s, %(server)s, %(resource)s, %(ts)s,
            %(raw)s::jsonb)
    ON CONFLICT (customer_id, event_id) DO NOTHING
    RETURNING customer_id, agent_id, seq, received_at
), act AS (
    INSERT INTO agent_activity (customer_id, agent_id, minute, n)
    SELECT customer_id, agent_id, date_trunc('minute', received_at), 1
    FROM ins WHERE agent_id IS NOT NULL
    ON CONFLICT (customer_id, agent_id, minute) DO UPDATE SET n = agent_activity.n + 1
)
SELECT ins.seq, ins.received_at,
    CASE WHEN NOT %(sync)s THEN set_config('synchronous_commit', 'off', true) END, """
    + _HISTORY_COLUMNS.replace("{seq}", "ins.seq").replace("{t}", "ins.received_at")
    + " FROM ins"
)


def _history_params(
    customer_id: str, q: HistoryQuery, baseline_hours: int, recent: int
) -> dict[str, Any]:
    return {
        "c": customer_id,
        "a": q.agent_id,
        "server": q.server_key,
        "resource": q.resource_key,
        "baseline": baseline_hours,
        "recent": recent,
    }


def _history_facts(
    q: HistoryQuery, at: datetime, row: Sequence[Any], extra_last_hour: int = 0
) -> HistoryFacts | None:
    if q.agent_id is None:
        return None
    first_server, first_resource, last_hour, base_n, base_start, recent_actions = row
    rate = None
    if base_start is not None and base_n:
        span_h = (at - timedelta(hours=1) - base_start).total_seconds() / 3600
        hourly = float(base_n) / max(1.0, span_h)
        rate = round((float(last_hour) + extra_last_hour) / hourly, 2)
    return HistoryFacts(
        first_use_of_server=first_server,
        first_use_of_resource=first_resource,
        rate_vs_baseline=rate,
        recent_actions=list(reversed(recent_actions)),
    )


async def insert_action(
    conn: Conn,
    customer_id: str,
    event: ActionEvent,
    raw: bytes,
    *,
    baseline_hours: int = 24,
    recent: int = 20,
    sync_commit: bool = True,
) -> tuple[Inserted, HistoryFacts | None] | None:
    """Store one action and read its agent's history in one round trip; None when this
    customer already sent this event_id (nothing is written then). Without `sync_commit`, the
    transaction's commit does not wait for the WAL flush (see `Settings.sync_commit`)."""
    q = Engine.facts_for_history(event)
    params = _history_params(customer_id, q, baseline_hours, recent)
    params.update(
        e=event.event_id,
        session=event.session.session_id if event.session else None,
        action=event.action,
        ts=_utc(event.timestamp),
        raw=raw.decode(),
        sync=sync_commit,
    )
    cur = await conn.execute(_INSERT_WITH_HISTORY, params)
    row = await cur.fetchone()
    if row is None:
        return None
    at = Inserted(row[0], row[1])
    return at, _history_facts(q, at.received_at, row[3:], extra_last_hour=1)


# Actions and queue rows in one statement; only newly inserted actions are queued and counted.
# Activity rows are upserted in key order so concurrent batches cannot deadlock.
_INSERT_BATCH = """
WITH ins AS (
    INSERT INTO actions (customer_id, event_id, agent_id, session_id, action, server_key,
                         resource_key, "timestamp", event)
    SELECT %s, e, a, s, act, sk, rk, ts, ev::jsonb
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                %s::timestamptz[], %s::text[]) AS u(e, a, s, act, sk, rk, ts, ev)
    ON CONFLICT (customer_id, event_id) DO NOTHING
    RETURNING customer_id, event_id, agent_id, received_at
), q AS (
    INSERT INTO scoring_queue (customer_id, event_id)
    SELECT customer_id, event_id FROM ins
)
INSERT INTO agent_activity (customer_id, agent_id, minute, n)
SELECT customer_id, agent_id, date_trunc('minute', min(received_at)), count(*)
FROM ins WHERE agent_id IS NOT NULL
GROUP BY customer_id, agent_id ORDER BY customer_id, agent_id
ON CONFLICT (customer_id, agent_id, minute) DO UPDATE SET n = agent_activity.n + excluded.n
"""

NOTIFY_CHANNEL = "govrix_scoring"


async def insert_batch(
    conn: Conn, customer_id: str, events: Sequence[tuple[ActionEvent, bytes]]
) -> None:
    """Store actions and queue them for scoring; wakes the workers at commit (NOTIFY)."""
    rows = [Engine.action_row(customer_id, e, raw.decode()) for e, raw in events]
    columns = list(zip(*rows, strict=True))[1:]  # customer_id is the same scalar for all
    await conn.execute(_INSERT_BATCH, (customer_id, *(list(c) for c in columns)))
    await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, customer_id))


async def history(
    conn: Conn,
    customer_id: str,
    event: ActionEvent,
    at: Inserted,
    *,
    baseline_hours: int = 24,
    recent: int = 20,
) -> HistoryFacts | None:
    """What the database knows about the agent before a stored action; None without an agent.

    Rate vs baseline = actions in the hour up to this one / the agent's hourly rate over the
    `baseline_hours` before that hour (None while the agent has no activity before that hour).
    """
    q = Engine.facts_for_history(event)
    if q.agent_id is None:
        return None
    params = _history_params(customer_id, q, baseline_hours, recent)
    params.update(seq=at.seq, t=at.received_at)
    cur = await conn.execute(_HISTORY, params)
    row = await cur.fetchone()
    assert row is not None  # a SELECT without FROM always yields one row
    return _history_facts(q, at.received_at, row)


# --- scores ---------------------------------------------------------------------------------

_INSERT_SCORE = """
INSERT INTO scores (customer_id, event_id, score, risk_level, confidence, reasoning, violations,
                    compliance_refs, mitigations, score_components, scoring_source, scorer_version)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s, %s)
ON CONFLICT (customer_id, event_id) DO NOTHING
"""


async def insert_score(conn: Conn, customer_id: str, r: ScoreResult) -> bool:
    """Store a score; False when the event already had one (never overwritten)."""
    cur = await conn.execute(
        _INSERT_SCORE,
        (
            customer_id,
            r.event_id,
            r.score,
            r.risk_level,
            r.confidence,
            r.reasoning,
            _ENCODER.encode(r.violations).decode(),
            r.compliance_refs,
            r.mitigations,
            _ENCODER.encode(r.score_components).decode(),
            r.scoring_source,
            r.scorer_version,
        ),
    )
    return cur.rowcount == 1
