"""``/api/v1/stats``: read-only aggregates for dashboards (the console's Overview and Agents).

Why a route and not SQL in the console: the console reads only public routes, so whatever it
shows, an operator's own tooling can read the same way (bearer key, same errors).

Speed. A 30-day aggregate over a million events is a scan of every row in the window (about
1.4 s on the 2-core dev box), far over the 200 ms a page may take. So each answer is computed
once per window and kept: requests within ``ttl`` of the computation get the stored answer,
later ones get it too while one background task recomputes it (stale-while-revalidate, as
``api/count_cache.py`` does for totals). Only the first request for a window after the process
starts waits for the scan, and one that finds an answer older than ``MAX_STALE_TTLS`` ttls (after
a long idle). Every answer carries ``as_of``, the time it was computed. A filter on
one agent (``agent_id=``) is not cached: it reads that agent's rows through
``events_agent_ts_idx``.

What is counted, per window (``"timestamp"`` in ``[from, to)``):

- ``calls``: request events (a refused call has only its request event); ``tokens`` and
  ``cost_usd``: sums over response events.
- ``refusals``: request events the proxy answered itself, by the code it recorded in ``error``
  (addon/refusals.py): ``blocked`` (``agent_blocked``, ``agent_retired``), ``budget``
  (``budget_exceeded``, ``budget_unpriced``), ``policy`` (``policy_blocked``, which includes rules
  on an MCP tool call's risk level), ``other`` (every other refusal or abort).
- ``pii_events`` (events with a finding), ``pii_findings`` (findings: type and JSON path, summed
  over events), ``pii_types`` (events per PII type).
- ``risk``: scored actions (``scores``, both the proxy's inline MCP scores and ``POST /events``)
  per time bucket and risk level, by ``scored_at``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from psycopg import sql

from addon.policy.model import PolicyError
from addon.policy.parse import load_policy_text
from api.count_cache import RefreshingCache
from api.errors import error_responses
from api.events import IdFilter, Pool, PoolDep

log = logging.getLogger("govrix.api.stats")

Window = Literal["1h", "24h", "30d", "today"]
RiskLevel = Literal["none", "low", "medium", "high", "critical"]
RISK_LEVELS: tuple[RiskLevel, ...] = ("none", "low", "medium", "high", "critical")

#: Window length, risk-chart bucket, and how long a computed answer counts as fresh.
_WINDOWS: dict[str, tuple[timedelta, timedelta, float]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=5), 2.0),
    "24h": (timedelta(days=1), timedelta(hours=1), 10.0),
    "30d": (timedelta(days=30), timedelta(days=1), 30.0),
    "today": (timedelta(days=1), timedelta(hours=1), 10.0),
}
TOP_N = 10
#: An answer older than this many ttls is recomputed while the request waits.
MAX_STALE_TTLS = 10

#: Refusal codes the proxy records in ``events.error`` (addon/refusals.py), by console kind.
REFUSAL_KINDS: dict[str, tuple[str, ...]] = {
    "blocked": ("agent_blocked", "agent_retired"),
    "budget": ("budget_exceeded", "budget_unpriced"),
    "policy": ("policy_blocked",),
}
_KNOWN_REFUSALS = tuple(code for codes in REFUSAL_KINDS.values() for code in codes)

WindowParam = Annotated[
    Window,
    QueryParameter(
        description="`1h`, `24h` and `30d` end now; `today` starts at 00:00 UTC (as daily budgets)."
    ),
]


class Refusals(msgspec.Struct, kw_only=True):
    """Calls the proxy refused, by kind (module docstring)."""

    blocked: int
    budget: int
    policy: int
    other: int


class Usage(msgspec.Struct, kw_only=True):
    """Calls, tokens and cost of one agent, model or provider."""

    key: str | None
    calls: int
    tokens: int
    cost_usd: float


class TypeCount(msgspec.Struct, kw_only=True):
    type: str
    events: int


class RiskBucket(msgspec.Struct, kw_only=True):
    """Scored actions in ``[start, start + bucket_seconds)`` per risk level."""

    start: datetime
    none: int = 0
    low: int = 0
    medium: int = 0
    high: int = 0
    critical: int = 0


class Overview(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """``GET /api/v1/stats/overview``: the window's totals, refusals, PII, risk and top lists."""

    window: str
    from_: datetime
    to: datetime
    as_of: datetime
    calls: int
    tokens: int
    cost_usd: float
    refusals: Refusals
    pii_events: int
    pii_findings: int
    pii_types: list[TypeCount]
    risk_bucket_seconds: int
    risk: list[RiskBucket]
    top_agents: list[Usage]
    models: list[Usage]
    providers: list[Usage]


class AgentStats(msgspec.Struct, kw_only=True):
    """One agent's activity in the window; ``top_risk`` is the highest level scored for it."""

    agent_id: str
    calls: int
    tokens: int
    cost_usd: float
    refusals: int
    last_event_at: datetime | None
    top_risk: RiskLevel | None


class AgentStatsList(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """``GET /api/v1/stats/agents``: agents with events or scores in the window, busiest first."""

    window: str
    from_: datetime
    to: datetime
    as_of: datetime
    agents: list[AgentStats]


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime, timedelta]:
    """``[from, to)`` of ``window`` ending at ``now``, and its risk-chart bucket length."""
    length, bucket, _ttl = _WINDOWS[window]
    if window == "today":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, now, bucket
    return now - length, now, bucket


def bucket_origin(start: datetime, bucket: timedelta) -> datetime:
    """Buckets aligned to whole bucket lengths since the epoch (5 min, 1 h, 1 day in UTC)."""
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    steps = (start - epoch) // bucket
    return epoch + steps * bucket


# -- SQL -----------------------------------------------------------------------------------------

_REFUSAL_COLUMNS = sql.SQL(", ").join(
    sql.SQL("count(*) FILTER (WHERE direction = 'request' AND error = ANY({}))").format(
        sql.Literal(list(codes))
    )
    for codes in REFUSAL_KINDS.values()
)
_AGENT_FILTER = sql.SQL("AND agent_id = %(agent_id)s")

# One pass over the window: the grand total and the per agent / model / provider groups.
_USAGE_Q = sql.SQL(
    """
SELECT GROUPING(agent_id, model, provider), agent_id, model, provider,
       count(*) FILTER (WHERE direction = 'request'),
       coalesce(sum(total_tokens) FILTER (WHERE direction = 'response'), 0),
       coalesce(sum(cost_usd) FILTER (WHERE direction = 'response'), 0),
       {refusals},
       count(*) FILTER (WHERE direction = 'request' AND error IS NOT NULL
                        AND NOT error = ANY({known})),
       count(*) FILTER (WHERE pii_detected),
       coalesce(sum(jsonb_array_length(pii_findings)) FILTER (WHERE pii_detected), 0)
FROM events
WHERE "timestamp" >= %(from)s AND "timestamp" < %(to)s {agent}
GROUP BY GROUPING SETS ((), (agent_id), (model), (provider))
"""
)
_PII_TYPES_Q = sql.SQL(
    """
SELECT t, count(*) FROM events, unnest(pii_types) AS t
WHERE pii_detected AND "timestamp" >= %(from)s AND "timestamp" < %(to)s {agent}
GROUP BY t ORDER BY count(*) DESC, t
"""
)
_RISK_Q = sql.SQL(
    """
SELECT date_bin(%(bucket)s, s.scored_at, %(origin)s), s.risk_level, count(*)
FROM scores s {join}
WHERE s.scored_at >= %(from)s AND s.scored_at < %(to)s {agent}
GROUP BY 1, 2 ORDER BY 1
"""
)
_AGENTS_Q = sql.SQL(
    """
SELECT agent_id,
       count(*) FILTER (WHERE direction = 'request'),
       coalesce(sum(total_tokens) FILTER (WHERE direction = 'response'), 0),
       coalesce(sum(cost_usd) FILTER (WHERE direction = 'response'), 0),
       count(*) FILTER (WHERE direction = 'request' AND error IS NOT NULL),
       max("timestamp")
FROM events
WHERE "timestamp" >= %(from)s AND "timestamp" < %(to)s {agent}
GROUP BY agent_id
"""
)
# Highest level per agent: the level's rank, so that max() orders none < ... < critical.
_AGENT_RISK_Q = sql.SQL(
    """
SELECT a.agent_id, max(array_position(%(levels)s::text[], s.risk_level))
FROM scores s JOIN actions a USING (customer_id, event_id)
WHERE s.scored_at >= %(from)s AND s.scored_at < %(to)s AND a.agent_id IS NOT NULL {agent}
GROUP BY a.agent_id
"""
)


def _usage(row: tuple[Any, ...], key: str | None) -> Usage:
    return Usage(key=key, calls=int(row[4]), tokens=int(row[5]), cost_usd=float(row[6]))


def _top(items: list[Usage]) -> list[Usage]:
    items.sort(key=lambda u: (-u.cost_usd, -u.calls, u.key or ""))
    return items[:TOP_N]


async def compute_overview(pool: Pool, window: str, agent_id: str | None = None) -> Overview:
    """Aggregate ``window`` now (uncached), optionally for one agent."""
    now = datetime.now(UTC)
    start, end, bucket = window_bounds(window, now)
    agent = _AGENT_FILTER if agent_id is not None else sql.SQL("")
    risk_agent = sql.SQL("AND a.agent_id = %(agent_id)s") if agent_id else sql.SQL("")
    join = sql.SQL("JOIN actions a USING (customer_id, event_id)") if agent_id else sql.SQL("")
    params: dict[str, Any] = {
        "from": start,
        "to": end,
        "agent_id": agent_id,
        "bucket": bucket,
        "origin": bucket_origin(start, bucket),
    }
    usage_q = _USAGE_Q.format(
        refusals=_REFUSAL_COLUMNS, known=sql.Literal(list(_KNOWN_REFUSALS)), agent=agent
    )
    async with pool.connection() as conn, conn.pipeline():
        usage_cur = await conn.execute(usage_q, params)
        pii_cur = await conn.execute(_PII_TYPES_Q.format(agent=agent), params)
        risk_cur = await conn.execute(_RISK_Q.format(join=join, agent=risk_agent), params)
        usage_rows = await usage_cur.fetchall()
        pii_rows = await pii_cur.fetchall()
        risk_rows = await risk_cur.fetchall()
    total: tuple[Any, ...] | None = None
    agents: list[Usage] = []
    models: list[Usage] = []
    providers: list[Usage] = []
    for row in usage_rows:
        grouping = row[0]  # bit 2: agent_id not grouped, bit 1: model, bit 0: provider
        if grouping == 7:
            total = row
        elif grouping == 3:
            agents.append(_usage(row, row[1]))
        elif grouping == 5:
            models.append(_usage(row, row[2]))
        elif grouping == 6:
            providers.append(_usage(row, row[3]))
    empty: tuple[Any, ...] = (7, None, None, None, 0, 0, 0.0, 0, 0, 0, 0, 0, 0)
    t = total or empty
    return Overview(
        window=window,
        from_=start,
        to=end,
        as_of=now,
        calls=int(t[4]),
        tokens=int(t[5]),
        cost_usd=float(t[6]),
        refusals=Refusals(blocked=int(t[7]), budget=int(t[8]), policy=int(t[9]), other=int(t[10])),
        pii_events=int(t[11]),
        pii_findings=int(t[12]),
        pii_types=[TypeCount(type=r[0], events=int(r[1])) for r in pii_rows],
        risk_bucket_seconds=int(bucket.total_seconds()),
        risk=risk_buckets(risk_rows, bucket_origin(start, bucket), end, bucket),
        top_agents=_top(agents),
        models=_top(models),
        providers=_top(providers),
    )


def risk_buckets(
    rows: list[tuple[Any, ...]], origin: datetime, end: datetime, bucket: timedelta
) -> list[RiskBucket]:
    """Every bucket from ``origin`` to ``end``, empty ones included (a chart needs the gaps)."""
    by_start: dict[datetime, RiskBucket] = {}
    at = origin
    while at < end:
        by_start[at] = RiskBucket(start=at)
        at += bucket
    for start, level, n in rows:
        b = by_start.get(start)
        if b is not None and level in RISK_LEVELS:
            setattr(b, level, getattr(b, level) + int(n))
    return list(by_start.values())


async def compute_agents(pool: Pool, window: str, agent_id: str | None = None) -> AgentStatsList:
    """Per-agent activity in ``window`` now (uncached), busiest (by cost, then calls) first."""
    now = datetime.now(UTC)
    start, end, _bucket = window_bounds(window, now)
    params: dict[str, Any] = {
        "from": start,
        "to": end,
        "agent_id": agent_id,
        "levels": list(RISK_LEVELS),
    }
    agent = _AGENT_FILTER if agent_id is not None else sql.SQL("")
    risk_agent = sql.SQL("AND a.agent_id = %(agent_id)s") if agent_id else sql.SQL("")
    async with pool.connection() as conn, conn.pipeline():
        cur = await conn.execute(_AGENTS_Q.format(agent=agent), params)
        risk_cur = await conn.execute(_AGENT_RISK_Q.format(agent=risk_agent), params)
        rows = await cur.fetchall()
        risk_rows = await risk_cur.fetchall()
    risk = {r[0]: RISK_LEVELS[int(r[1]) - 1] for r in risk_rows if r[1]}
    out = [
        AgentStats(
            agent_id=r[0],
            calls=int(r[1]),
            tokens=int(r[2]),
            cost_usd=float(r[3]),
            refusals=int(r[4]),
            last_event_at=r[5],
            top_risk=risk.pop(r[0], None),
        )
        for r in rows
    ]
    # Agents scored (POST /events) without proxied calls in the window still show their risk.
    out += [
        AgentStats(
            agent_id=a,
            calls=0,
            tokens=0,
            cost_usd=0.0,
            refusals=0,
            last_event_at=None,
            top_risk=level,
        )
        for a, level in risk.items()
    ]
    out.sort(key=lambda s: (-s.cost_usd, -s.calls, s.agent_id))
    return AgentStatsList(window=window, from_=start, to=end, as_of=now, agents=out)


# -- policy rule hits (GET /api/v1/stats/policies) -----------------------------------------------


class PolicyActions(msgspec.Struct, kw_only=True):
    """Decisions in the window by what they did: a call refused (``block``), PII redacted,
    tags set, log rules matched. One decision is one pass (request or response) of one call
    with at least one matching rule; it may count under several actions."""

    block: int
    redact: int
    tag: int
    log: int


class RuleHits(msgspec.Struct, kw_only=True):
    """How often one rule matched in the window.

    ``action`` and ``enabled`` are the rule's in the active version (``null`` for a rule that
    only older versions had). ``hits`` = ``request`` + ``response`` (passes that matched);
    ``blocked``: calls this rule refused (the first matching ``block`` rule of a request pass).
    """

    rule: str
    action: str | None
    enabled: bool | None
    hits: int
    request: int
    response: int
    blocked: int


class PolicyStats(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """``GET /api/v1/stats/policies``: rule matches recorded in ``events.policy_decisions``."""

    window: str
    from_: datetime
    to: datetime
    as_of: datetime
    policy_version: int | None
    decisions: int
    actions: PolicyActions
    rules: list[RuleHits]


#: At most this many rules that are not in the active version (old names), most hit first.
OTHER_RULES_MAX = 200

# One scan of the window's events that have decisions. A response event repeats its call's
# request-pass decisions (the proxy keeps one list per call), so each event counts only the
# decisions of its own pass (``phase = direction``): every pass of every call exactly once.
# One row per (decision, matched rule); the grand total (GROUPING = 1) counts each decision once
# (its first rule, ``n = 1``: a decision always names at least one rule).
_POLICY_HITS_Q = sql.SQL(
    """
SELECT GROUPING(r.rule), r.rule, count(*),
       count(*) FILTER (WHERE d->>'phase' = 'request'),
       count(*) FILTER (WHERE d->>'phase' = 'response'),
       count(*) FILTER (WHERE d->>'block' = r.rule),
       count(*) FILTER (WHERE r.n = 1),
       count(*) FILTER (WHERE r.n = 1 AND d ? 'block'),
       count(*) FILTER (WHERE r.n = 1 AND d ? 'redact'),
       count(*) FILTER (WHERE r.n = 1 AND d ? 'tags'),
       count(*) FILTER (WHERE r.n = 1 AND d ? 'logs')
FROM events e
CROSS JOIN LATERAL jsonb_array_elements(e.policy_decisions) d
CROSS JOIN LATERAL jsonb_array_elements_text(
    CASE WHEN jsonb_typeof(d->'matched') = 'array' THEN d->'matched' END
) WITH ORDINALITY AS r(rule, n)
WHERE e."timestamp" >= %(from)s AND e."timestamp" < %(to)s
  AND e.policy_decisions IS NOT NULL AND jsonb_typeof(e.policy_decisions) = 'array'
  AND d->>'phase' = e.direction
GROUP BY GROUPING SETS ((r.rule), ())
"""
)
_ACTIVE_POLICY_Q = "SELECT id, yaml FROM policy_versions ORDER BY id DESC LIMIT 1"


async def active_policy_id(pool: Pool) -> int | None:
    """Id of the active policy version (the newest), or None before the first one."""
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT max(id) FROM policy_versions")).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


async def compute_policy_hits(pool: Pool, window: str) -> PolicyStats:
    """Rule matches in ``window`` now (uncached), the active version's rules first (file order,
    unmatched ones with zeros), then rules of older versions, most hit first."""
    now = datetime.now(UTC)
    start, end, _bucket = window_bounds(window, now)
    async with pool.connection() as conn:
        active = await (await conn.execute(_ACTIVE_POLICY_Q)).fetchone()
        rules: dict[str, tuple[str, bool]] = {}
        if active is not None:
            try:
                policy = load_policy_text(active[1], "policy")
                rules = {r.name: (r.action, r.enabled) for r in policy.rules}
            except PolicyError:  # stored versions compiled when put; a later parser may differ
                rules = {}
        rows = await (await conn.execute(_POLICY_HITS_Q, {"from": start, "to": end})).fetchall()
    totals = next((r[6:] for r in rows if r[0] == 1), (0, 0, 0, 0, 0))
    hits = {r[1]: r[1:6] for r in rows if r[0] == 0}
    out: list[RuleHits] = []
    for name, (action, enabled) in rules.items():
        r = hits.pop(name, (name, 0, 0, 0, 0))
        out.append(_rule_hits(r, action, enabled))
    others = sorted(hits.values(), key=lambda r: (-int(r[1]), r[0]))[:OTHER_RULES_MAX]
    out += [_rule_hits(r, None, None) for r in others]
    return PolicyStats(
        window=window,
        from_=start,
        to=end,
        as_of=now,
        policy_version=int(active[0]) if active is not None else None,
        decisions=int(totals[0]),
        actions=PolicyActions(
            block=int(totals[1]), redact=int(totals[2]), tag=int(totals[3]), log=int(totals[4])
        ),
        rules=out,
    )


def _rule_hits(row: tuple[Any, ...], action: str | None, enabled: bool | None) -> RuleHits:
    return RuleHits(
        rule=str(row[0]),
        action=action,
        enabled=enabled,
        hits=int(row[1]),
        request=int(row[2]),
        response=int(row[3]),
        blocked=int(row[4]),
    )


# -- the cache -----------------------------------------------------------------------------------


class StatsCache(RefreshingCache):
    """Answers per key, served while fresh and while one background task recomputes them.

    Concurrent first requests for a key share one computation (api/count_cache.py). Values live
    in the process (one per window and route: a handful), so memory is bounded by the number of
    windows.
    """

    async def get(self, key: Hashable, ttl: float, compute: Callable[[], Awaitable[Any]]) -> Any:
        hit = self._age(key)
        if hit is None:
            return await self._compute(key, compute)
        value, age = hit
        if age > ttl * MAX_STALE_TTLS:
            return await self._compute(key, compute)  # after a long idle: never that old
        if age > ttl:
            self._refresh_later(key, compute)
        return value


StatsCacheDep = NamedDependency[StatsCache]


class StatsController(Controller):
    """Aggregates over a bounded window, for dashboards (module docstring)."""

    path = "/stats"
    tags = ["stats"]

    @get("/overview", operation_id="statsOverview", responses=error_responses(400, 401))
    async def overview(
        self,
        pool: PoolDep,
        stats_cache: StatsCacheDep,
        window: WindowParam = "24h",
        agent_id: IdFilter = None,
    ) -> Overview:
        """Calls, tokens, cost, refusals by kind, PII, risk levels over time, top agents,
        models and providers in the window. Cached per window (``as_of``; module docstring)."""
        if agent_id is not None:
            return await compute_overview(pool, window, agent_id)
        ttl = _WINDOWS[window][2]
        result: Overview = await stats_cache.get(
            ("overview", window), ttl, lambda: compute_overview(pool, window)
        )
        return result

    @get("/agents", operation_id="statsAgents", responses=error_responses(400, 401))
    async def agents(
        self,
        pool: PoolDep,
        stats_cache: StatsCacheDep,
        window: WindowParam = "today",
        agent_id: IdFilter = None,
    ) -> AgentStatsList:
        """Per agent: calls, tokens, cost, refusals, last event and highest risk level in the
        window, busiest first. Cached per window unless ``agent_id`` is given."""
        if agent_id is not None:
            return await compute_agents(pool, window, agent_id)
        ttl = _WINDOWS[window][2]
        result: AgentStatsList = await stats_cache.get(
            ("agents", window), ttl, lambda: compute_agents(pool, window)
        )
        return result

    @get("/policies", operation_id="statsPolicies", responses=error_responses(400, 401))
    async def policies(
        self, pool: PoolDep, stats_cache: StatsCacheDep, window: WindowParam = "24h"
    ) -> PolicyStats:
        """Per policy rule, how many passes of calls it matched in the window (request and
        response), how many calls it refused, and the window's decisions by action; the
        active version's rules come first, with their action. Cached per window and active
        version (``as_of``)."""
        ttl = _WINDOWS[window][2]
        version = await active_policy_id(pool)
        result: PolicyStats = await stats_cache.get(
            ("policies", window, version), ttl, lambda: compute_policy_hits(pool, window)
        )
        return result
