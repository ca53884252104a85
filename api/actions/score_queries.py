"""SQL that reads stored scores back: the `/scores` routes and the answer to a repeated
`POST /events` (tables in sql/005_scoring.sql; the writes are in store.py).

Every function takes an open connection. JSON comes out as text decoded by msgspec, so this works
on any pool whatever its JSON adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from api.actions.schemas import (
    CustomerSummary,
    EventScored,
    LevelCounts,
    ScoreDetail,
    ScoreSummary,
)
from api.actions.store import Conn
from api.scoring import ScoreComponent, Violation
from api.scoring.bands import RISK_LEVELS

_VIOLATIONS = msgspec.json.Decoder(list[Violation])
_COMPONENTS = msgspec.json.Decoder(list[ScoreComponent])

_SCORE_COLUMNS = """s.event_id, s.score, s.risk_level, s.confidence, s.reasoning,
    s.violations::text, s.compliance_refs, s.mitigations, s.score_components::text,
    s.scoring_source, s.scorer_version"""


def _scored(row: Sequence[Any], offset: int = 0) -> EventScored:
    r = row[offset:]
    return EventScored(
        event_id=r[0],
        status="scored",
        score=r[1],
        risk_level=r[2],
        confidence=r[3],
        reasoning=r[4],
        violations=_VIOLATIONS.decode(r[5]),
        compliance_refs=r[6],
        mitigations=r[7],
        score_components=_COMPONENTS.decode(r[8]),
        scoring_source=r[9],
        scorer_version=r[10],
    )


async def stored_score(conn: Conn, customer_id: str, event_id: str) -> EventScored | None:
    """The `POST /events` body of an already scored event."""
    cur = await conn.execute(
        "SELECT " + _SCORE_COLUMNS + " FROM scores s WHERE s.customer_id = %s AND s.event_id = %s",
        (customer_id, event_id),
    )
    row = await cur.fetchone()
    return _scored(row) if row else None


_DETAIL_SELECT = (
    """
SELECT a.customer_id, a.action, a.agent_id, a.session_id, a."timestamp", a.received_at,
       s.scored_at, """
    + _SCORE_COLUMNS
    + """
FROM scores s JOIN actions a USING (customer_id, event_id)
"""
)


def _detail(row: Sequence[Any]) -> ScoreDetail:
    s = _scored(row, 7)
    return ScoreDetail(
        event_id=s.event_id,
        customer_id=row[0],
        action=row[1],
        agent_id=row[2],
        session_id=row[3],
        timestamp=row[4],
        received_at=row[5],
        score=s.score,
        risk_level=s.risk_level,
        confidence=s.confidence,
        reasoning=s.reasoning,
        violations=s.violations,
        compliance_refs=s.compliance_refs,
        mitigations=s.mitigations,
        score_components=s.score_components,
        scoring_source=s.scoring_source,
        scorer_version=s.scorer_version,
        scored_at=row[6],
    )


async def score_detail(conn: Conn, customer_id: str, event_id: str) -> ScoreDetail | None:
    """One score with its action (`GET /scores/event/{event_id}`)."""
    cur = await conn.execute(
        _DETAIL_SELECT + " WHERE s.customer_id = %s AND s.event_id = %s", (customer_id, event_id)
    )
    row = await cur.fetchone()
    return _detail(row) if row else None


_FILTER = """
WHERE s.customer_id = %(c)s
  AND (%(level)s::text IS NULL OR s.risk_level = %(level)s)
  AND (%(from)s::timestamptz IS NULL OR s.scored_at >= %(from)s)
  AND (%(to)s::timestamptz IS NULL OR s.scored_at < %(to)s)
"""


async def list_scores(
    conn: Conn,
    customer_id: str,
    *,
    page: int,
    per_page: int,
    risk_level: str | None,
    from_date: datetime | None,
    to_date: datetime | None,
) -> tuple[list[ScoreDetail], int]:
    """A page of scores, newest first, and the total matching the filters."""
    params = {
        "c": customer_id,
        "level": risk_level,
        "from": from_date,
        "to": to_date,
        "limit": per_page,
        "offset": (page - 1) * per_page,
    }
    cur = await conn.execute(
        _DETAIL_SELECT + _FILTER + " ORDER BY s.scored_at DESC, s.event_id DESC"
        " LIMIT %(limit)s OFFSET %(offset)s",
        params,
    )
    items = [_detail(r) for r in await cur.fetchall()]
    cur = await conn.execute("SELECT count(*) FROM scores s" + _FILTER, params)
    total_row = await cur.fetchone()
    return items, int(total_row[0]) if total_row else 0


async def summary(
    conn: Conn, customer_id: str, from_date: datetime | None, to_date: datetime | None
) -> ScoreSummary:
    """Totals per risk level, the average score, and the queue backlog of the customer."""
    params = {"c": customer_id, "level": None, "from": from_date, "to": to_date}
    cur = await conn.execute(
        "SELECT s.risk_level, count(*), sum(s.score) FROM scores s"
        + _FILTER
        + " GROUP BY s.risk_level",
        params,
    )
    counts = dict.fromkeys(RISK_LEVELS, 0)
    total = points = 0
    for level, n, pts in await cur.fetchall():
        counts[level] = int(n)
        total += int(n)
        points += int(pts)
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed')"
        " FROM scoring_queue WHERE customer_id = %s",
        (customer_id,),
    )
    q = await cur.fetchone()
    return ScoreSummary(
        customer_id=customer_id,
        total=total,
        average=round(points / total, 2) if total else None,
        by_level=LevelCounts(**counts),
        pending=int(q[0]) if q else 0,
        failed=int(q[1]) if q else 0,
    )


async def queue_status(conn: Conn, customer_id: str, event_id: str) -> str | None:
    """'pending' or 'failed' for an action accepted by a batch and not scored; else None."""
    cur = await conn.execute(
        "SELECT status FROM scoring_queue WHERE customer_id = %s AND event_id = %s",
        (customer_id, event_id),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


# --- every customer's scores, for the management API (bearer key; admin.py) -----------------

_ALL_FILTER = """
WHERE (%(c)s::text IS NULL OR s.customer_id = %(c)s)
  AND (%(level)s::text IS NULL OR s.risk_level = %(level)s)
  AND (%(agent)s::text IS NULL OR a.agent_id = %(agent)s)
  AND (%(session)s::text IS NULL OR a.session_id = %(session)s)
  AND (%(from)s::timestamptz IS NULL OR s.scored_at >= %(from)s)
  AND (%(to)s::timestamptz IS NULL OR s.scored_at < %(to)s)
"""


async def list_all_scores(
    conn: Conn,
    *,
    customer_id: str | None,
    risk_level: str | None,
    agent_id: str | None,
    session_id: str | None,
    from_date: datetime | None,
    to_date: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[ScoreDetail], int]:
    """A page of scores of every customer (or one), newest first, and the total."""
    params = {
        "c": customer_id,
        "level": risk_level,
        "agent": agent_id,
        "session": session_id,
        "from": from_date,
        "to": to_date,
        "limit": limit,
        "offset": offset,
    }
    cur = await conn.execute(
        _DETAIL_SELECT + _ALL_FILTER + " ORDER BY s.scored_at DESC, s.customer_id, s.event_id DESC"
        " LIMIT %(limit)s OFFSET %(offset)s",
        params,
    )
    items = [_detail(r) for r in await cur.fetchall()]
    cur = await conn.execute(
        "SELECT count(*) FROM scores s JOIN actions a USING (customer_id, event_id)" + _ALL_FILTER,
        params,
    )
    total_row = await cur.fetchone()
    return items, int(total_row[0]) if total_row else 0


async def customer_summaries(
    conn: Conn, from_date: datetime | None, to_date: datetime | None
) -> list[CustomerSummary]:
    """`summary` for every customer with a score in the window or a queued action, by id."""
    cur = await conn.execute(
        "SELECT s.customer_id, s.risk_level, count(*), sum(s.score), max(s.scored_at)"
        " FROM scores s"
        " WHERE (%(from)s::timestamptz IS NULL OR s.scored_at >= %(from)s)"
        "   AND (%(to)s::timestamptz IS NULL OR s.scored_at < %(to)s)"
        " GROUP BY s.customer_id, s.risk_level",
        {"from": from_date, "to": to_date},
    )
    acc: dict[str, dict[str, Any]] = {}

    def entry(customer_id: str) -> dict[str, Any]:
        return acc.setdefault(
            customer_id,
            {"counts": dict.fromkeys(RISK_LEVELS, 0), "points": 0, "last": None, "q": (0, 0)},
        )

    for customer_id, level, n, pts, last in await cur.fetchall():
        e = entry(customer_id)
        e["counts"][level] = int(n)
        e["points"] += int(pts)
        e["last"] = last if e["last"] is None or last > e["last"] else e["last"]
    cur = await conn.execute(
        "SELECT customer_id, count(*) FILTER (WHERE status = 'pending'),"
        " count(*) FILTER (WHERE status = 'failed') FROM scoring_queue GROUP BY customer_id"
    )
    for customer_id, pending, failed in await cur.fetchall():
        entry(customer_id)["q"] = (int(pending), int(failed))
    out = []
    for customer_id in sorted(acc):
        e = acc[customer_id]
        total = sum(e["counts"].values())
        out.append(
            CustomerSummary(
                customer_id=customer_id,
                total=total,
                average=round(e["points"] / total, 2) if total else None,
                by_level=LevelCounts(**e["counts"]),
                pending=e["q"][0],
                failed=e["q"][1],
                last_scored_at=e["last"],
            )
        )
    return out
