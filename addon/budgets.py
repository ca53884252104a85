"""Budgets: reserve an upper bound before forwarding, settle with real usage, no I/O in a hook.

Limits come from the ``budgets`` table (applied the moment a row changes: ``LISTEN
govrix_budgets``, re-read every few seconds as a safety net) and from the config file. All
amounts are integers: tokens, and USD in micro-dollars (``USD_UNIT``), so a limit of exactly 10
admits exactly what fits and a long day of small costs never drifts.

Per (usage key, period) this proxy knows:

- ``spent``: settled usage. What PostgreSQL said at the last sync (every instance's settled
  usage), plus what this proxy settled since. The recorder settles each call with what the
  provider reported (``settle``); the reservation is released at the same time.
- ``reserved``: calls in flight. This proxy's own reservations, plus the ones the other instances
  published at their last sync (``budget_reservations``; rows older than ``RESERVATION_TTL`` are
  ignored, so a crashed instance holds nothing).

**Admission.** A call is reserved at an upper bound of what it can cost (:func:`call_cost`; the
bound is explained in ``addon/providers/tokens.py``) and admitted while ``spent + reserved <
limit`` for every budget that applies to it (its agent's and the global ones, daily and monthly,
tokens and USD). Because no call in flight can cost more than its reservation, the budget can be
exceeded by at most the real cost of the last call admitted: one call per proxy instance. (Other
instances' reservations and settled usage are seen at their sync, about once a second: within
that second, each instance may admit on its own view.)

Bounds are loose (a prompt is reserved at its byte length, 3 to 5 times its real count for
English), so a burst of calls against a nearly spent budget is refused for room that is only
*reserved*: :class:`Denial` says which (``reason``). ``"spent"``: the settled usage alone has
reached the limit; ``retry_after`` is the time until the period resets (UTC midnight, or the first
of the month). ``"reserved"``: calls in flight hold the rest; ``retry_after`` is 1 s, and
:meth:`Budgets.admit` waits (without blocking the event loop) for them to settle and admits the
call if it then fits, so a burst is admitted up to what really fits (≥ 80% of it at 50 concurrent
calls needs that wait: without it, a burst admits ``limit / bound`` calls at first try).
``"unpriced"``: a USD budget applies and the model has no known price; refused under
``unpriced="refuse"`` (the default: a USD budget cannot hold for a cost it cannot count),
admitted at no cost under ``"allow"``.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import msgspec
import psycopg

from addon.pricing import cost_usd
from addon.providers.base import RequestInfo, Usage
from addon.providers.tokens import prompt_token_bound

log = logging.getLogger("govrix.budgets")

PERIODS = ("daily", "monthly")
METRICS = ("tokens", "usd")
#: Micro-dollars per dollar: every USD amount in budget state is an integer of these.
USD_UNIT = 1_000_000
#: ``retry_after`` of a call refused only for room held by calls in flight.
IN_FLIGHT_RETRY_AFTER = 1
#: Another instance's published reservations count for this long after its last sync.
RESERVATION_TTL = 10.0
#: How often the background thread wakes to notice ``stop()`` while waiting for notifications.
_POLL = 0.5

Reason = Literal["spent", "reserved", "unpriced"]


def usd_to_micros(usd: float, *, up: bool = False) -> int:
    """Dollars as micro-dollars: to the nearest (a settled cost) or rounded up (a bound)."""
    scaled = usd * USD_UNIT
    # round() first so 0.1 * 1e6 == 100000.00000000001 does not ceil to 100001.
    nearest = round(scaled)
    if up and not math.isclose(scaled, nearest, rel_tol=1e-12, abs_tol=1e-9):
        return max(math.ceil(scaled), 0)
    return max(nearest, 0)


class BudgetSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One limit. ``agent_id`` None means global; ``limit`` in tokens or dollars."""

    period: str  # "daily" | "monthly"
    metric: str  # "tokens" | "usd"
    limit: float
    agent_id: str | None = None
    id: int | None = None  # the ``budgets`` row; None for one from the config file

    @property
    def scope(self) -> str:
        return "global" if self.agent_id is None else "agent"

    @property
    def usage_key(self) -> str:
        return "global" if self.agent_id is None else "agent:" + self.agent_id

    @property
    def limit_units(self) -> int:
        """The limit in integer units: tokens, or micro-dollars (never rounded up)."""
        if self.metric == "usd":
            return max(math.floor(self.limit * USD_UNIT + 1e-6), 0)
        return max(math.floor(self.limit + 1e-9), 0)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "scope": self.scope,
            "agent_id": self.agent_id,
            "period": self.period,
            "metric": self.metric,
            "limit": self.limit,
        }


def period_start(period: str, today: date) -> date:
    return today if period == "daily" else today.replace(day=1)


def period_end(period: str, today: date) -> datetime:
    """When the period that contains ``today`` (UTC) ends: next midnight, or next month's first."""
    if period == "daily":
        start = datetime(today.year, today.month, today.day, tzinfo=UTC)
        return datetime.fromtimestamp(start.timestamp() + 86_400, UTC)
    days = calendar.monthrange(today.year, today.month)[1]
    start = datetime(today.year, today.month, 1, tzinfo=UTC)
    return datetime.fromtimestamp(start.timestamp() + days * 86_400, UTC)


def seconds_until_reset(period: str, now: datetime) -> int:
    """Seconds until the period rolls over (UTC), at least 1."""
    return max(1, math.ceil(period_end(period, now.date()).timestamp() - now.timestamp()))


def to_display(metric: str, units: int) -> int | float:
    """Integer units as the API and refusals show them: tokens, or dollars."""
    return units / USD_UNIT if metric == "usd" else units


@dataclass(frozen=True, slots=True)
class Cost:
    """What a call may cost at most: tokens, and micro-dollars (None: the model has no price)."""

    tokens: int
    usd_micros: int | None = None


def call_cost(
    info: RequestInfo | None,
    provider: str,
    *,
    body_bytes: int,
    default_completion: int,
    needs_usd: bool,
) -> Cost:
    """The reservation of one call: an upper bound of its tokens, priced when a USD budget applies.

    ``body_bytes`` is the decoded request body's length: the prompt bound when the body could not
    be parsed. The completion is the request's own limit, or ``default_completion`` when it sets
    none (an allowance, not a bound: say so to whoever sets budgets). An MCP call costs nothing.
    """
    if provider == "mcp":
        return Cost(0, 0)
    parsed = info is not None and info.parse_error is None
    prompt = info.prompt_token_bound if parsed and info is not None else 0
    if prompt <= 0:
        prompt = prompt_token_bound(body_bytes)
    completion = info.completion_token_bound if parsed and info is not None else None
    if completion is None:
        completion = default_completion
    tokens = prompt + completion
    usd: int | None = None
    if needs_usd:
        price = cost_usd(
            provider,
            info.model if info is not None else None,
            Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=tokens,
                source="estimated",
            ),
        )
        usd = usd_to_micros(price, up=True) if price is not None else None
    return Cost(tokens, usd)


@dataclass(slots=True)
class Reservation:
    keys: tuple[tuple[str, str, date], ...]
    tokens: int
    usd_micros: int

    @property
    def usd(self) -> float:
        """The reserved dollars (for settling a call at its reservation)."""
        return self.usd_micros / USD_UNIT


@dataclass(slots=True)
class Denial:
    """Why a call was refused, in the budget's integer units (tokens or micro-dollars).

    ``spent`` is settled usage, ``reserved`` what calls in flight hold, ``cost`` this call's
    reservation; ``retry_after`` (seconds) is honest: the period's reset when ``reason`` is
    ``"spent"``, 1 s when it is ``"reserved"``, 0 (retrying will not help) when ``"unpriced"``.
    """

    spec: BudgetSpec
    reason: Reason
    limit: int
    spent: int
    reserved: int
    cost: int
    retry_after: int
    period_ends_at: datetime

    @property
    def used(self) -> int:
        """Settled plus reserved (kept for callers written before ``spent``/``reserved``)."""
        return self.spent + self.reserved

    def message(self, who: str) -> str:
        """A sentence for the refusal; ``who`` is e.g. ``"agent billing-bot"`` or ``"all agents"``."""
        spec = self.spec
        what = f"the {spec.period} {spec.metric} budget of {spec.limit:g} for {who}"
        if self.reason == "spent":
            return f"{what} is used up until {self.period_ends_at:%Y-%m-%dT%H:%M:%SZ}"
        if self.reason == "reserved":
            return f"{what} is held by calls in flight: retry in {self.retry_after} s"
        return f"{what} cannot price this model, so the call is refused"

    def body(self) -> dict[str, object]:
        """The ``budget`` object of a 429 body: the spec, then limit/spent/reserved apart."""
        m = self.spec.metric
        return self.spec.describe() | {
            "limit": to_display(m, self.limit),
            "spent": to_display(m, self.spent),
            "reserved": to_display(m, self.reserved),
            "cost": to_display(m, self.cost),
            "reason": self.reason,
            "period_ends_at": self.period_ends_at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(slots=True)
class _Totals:
    tokens: int = 0
    usd: int = 0  # micro-dollars

    def add(self, tokens: int, usd: int) -> None:
        self.tokens += tokens
        self.usd += usd

    def get(self, metric: str) -> int:
        return self.tokens if metric == "tokens" else self.usd


_Key = tuple[str, str, date]  # (usage_key, period, period_start)


@dataclass
class BudgetStats:
    denied: int = 0
    waited: int = 0
    syncs: int = 0
    reloads: int = 0
    notifications: int = 0
    sync_errors: int = 0
    last_error: str | None = None
    denied_by_reason: dict[str, int] = field(default_factory=dict)


def _sum(maps: Iterable[dict[_Key, _Totals]], key: _Key, metric: str) -> int:
    total = 0
    for d in maps:
        t = d.get(key)
        if t is not None:
            total += t.get(metric)
    return total


class Budgets:
    """In-memory budget state kept in step with PostgreSQL by one background thread."""

    def __init__(
        self,
        conninfo: str | None,
        *,
        configured: Iterable[BudgetSpec] = (),
        sync_interval: float = 1.0,
        reload_interval: float = 5.0,
        unpriced: Literal["refuse", "allow"] = "refuse",
        instance: str | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.configured = list(configured)
        self.sync_interval = sync_interval
        self.reload_interval = reload_interval
        self.unpriced = unpriced
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._lock = threading.Lock()
        self._specs: list[BudgetSpec] = list(self.configured)
        self._by_agent: dict[str, list[BudgetSpec]] = {}
        self._global: list[BudgetSpec] = []
        self._index()
        self._db: dict[_Key, _Totals] = {}
        self._inflight: dict[_Key, _Totals] = {}
        self._pending: dict[_Key, _Totals] = {}
        self._reserved: dict[_Key, _Totals] = {}
        self._others: dict[_Key, _Totals] = {}  # other instances' published reservations
        # What this instance last wrote to budget_reservations, and when (monotonic).
        self._published: dict[_Key, tuple[int, int]] = {}
        self._published_at = 0.0
        self._swept_at = 0.0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.stats = BudgetStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._reload_now = True
        self.loaded = conninfo is None

    # -- hot path -------------------------------------------------------------------------------

    def active(self) -> bool:
        return bool(self._specs)

    def applies(self, agent_id: str) -> tuple[bool, bool]:
        """(any budget applies to this agent, one of them is in USD)."""
        specs = self._global + self._by_agent.get(agent_id, [])
        return bool(specs), any(s.metric == "usd" for s in specs)

    def reserve(
        self,
        agent_id: str,
        cost: Cost | int,
        usd: float | None = None,
        now: datetime | None = None,
    ) -> Reservation | Denial:
        """Admit and reserve ``cost``, or say which budget refuses and why (never waits).

        ``cost`` as plain tokens plus ``usd`` (dollars) is the older form of the same call.
        """
        if not isinstance(cost, Cost):
            cost = Cost(cost, usd_to_micros(usd, up=True) if usd is not None else None)
        res = self._try(agent_id, cost, now, None)
        if isinstance(res, Denial):
            self._count_denial(res)
        return res

    async def admit(
        self, agent_id: str, cost: Cost, *, wait: float, now: datetime | None = None
    ) -> Reservation | Denial:
        """As :meth:`reserve`, but a call refused only for room held by calls in flight waits up
        to ``wait`` seconds for them to settle (or for a limit to change) and is admitted if it
        then fits. Runs on the caller's event loop; nothing blocks it."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + wait
        waited = False
        while True:
            left = deadline - time.monotonic()
            fut: asyncio.Future[None] | None = loop.create_future() if left > 0 else None
            res = self._try(agent_id, cost, now, (loop, fut) if fut is not None else None)
            if fut is None or not isinstance(res, Denial) or res.reason != "reserved":
                break
            waited = True
            try:
                await asyncio.wait_for(fut, left)
            except TimeoutError:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiters.remove((loop, fut))
        if waited:
            self.stats.waited += 1
        if isinstance(res, Denial):
            self._count_denial(res)
        return res

    def settle(self, res: Reservation, tokens: int, usd: float | None) -> None:
        """Release the reservation and count what the call really used (``usd`` in dollars)."""
        if not res.keys:
            return
        micros = usd_to_micros(usd) if usd is not None and usd > 0 else 0
        tokens = max(tokens, 0)
        with self._lock:
            for key in res.keys:
                r = self._reserved.get(key)
                if r is not None:
                    r.add(-res.tokens, -res.usd_micros)
                    if r.tokens <= 0 and r.usd <= 0:
                        del self._reserved[key]
                self._pending.setdefault(key, _Totals()).add(tokens, micros)
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    def usage(self, spec: BudgetSpec, now: datetime | None = None) -> tuple[int, int]:
        """(spent, reserved) of ``spec`` in its integer units, as this proxy sees them now."""
        key = self._key(spec, (now or datetime.now(UTC)).date())
        with self._lock:
            return (
                _sum((self._db, self._inflight, self._pending), key, spec.metric),
                _sum((self._reserved, self._others), key, spec.metric),
            )

    @staticmethod
    def _key(spec: BudgetSpec, today: date) -> _Key:
        return (spec.usage_key, spec.period, period_start(spec.period, today))

    def _try(
        self,
        agent_id: str,
        cost: Cost,
        now: datetime | None,
        waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None,
    ) -> Reservation | Denial:
        specs = self._global + self._by_agent.get(agent_id, [])
        if not specs:
            return Reservation((), 0, 0)
        now = now or datetime.now(UTC)
        today = now.date()
        usd = cost.usd_micros
        if usd is None and self.unpriced == "allow":
            usd = 0
        with self._lock:
            first_reserved: Denial | None = None
            for spec in specs:
                key = self._key(spec, today)
                need = cost.tokens if spec.metric == "tokens" else usd
                limit = spec.limit_units
                spent = _sum((self._db, self._inflight, self._pending), key, spec.metric)
                reserved = _sum((self._reserved, self._others), key, spec.metric)
                if need is None:
                    return Denial(
                        spec,
                        "unpriced",
                        limit,
                        spent,
                        reserved,
                        0,
                        0,
                        period_end(spec.period, today),
                    )
                if need == 0:
                    continue  # a call that costs nothing in this metric cannot overshoot it
                if spent >= limit:
                    return Denial(
                        spec,
                        "spent",
                        limit,
                        spent,
                        reserved,
                        need,
                        seconds_until_reset(spec.period, now),
                        period_end(spec.period, today),
                    )
                if spent + reserved >= limit and first_reserved is None:
                    first_reserved = Denial(
                        spec,
                        "reserved",
                        limit,
                        spent,
                        reserved,
                        need,
                        IN_FLIGHT_RETRY_AFTER,
                        period_end(spec.period, today),
                    )
            if first_reserved is not None:
                if waiter is not None:
                    self._waiters.append(waiter)
                return first_reserved
            keys = {self._key(spec, today) for spec in specs}
            for key in keys:
                self._reserved.setdefault(key, _Totals()).add(cost.tokens, usd or 0)
        return Reservation(tuple(keys), cost.tokens, usd or 0)

    def _count_denial(self, res: Denial) -> None:
        self.stats.denied += 1
        by = self.stats.denied_by_reason
        by[res.reason] = by.get(res.reason, 0) + 1

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, fut)

    def _wake_all(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    # -- configuration --------------------------------------------------------------------------

    def _index(self) -> None:
        by_agent: dict[str, list[BudgetSpec]] = {}
        glob: list[BudgetSpec] = []
        for spec in self._specs:
            if spec.agent_id is None:
                glob.append(spec)
            else:
                by_agent.setdefault(spec.agent_id, []).append(spec)
        self._by_agent, self._global = by_agent, glob

    def set_specs(self, specs: Iterable[BudgetSpec]) -> None:
        self._specs = [*self.configured, *specs]
        self._index()
        self._wake_all()  # a raised limit may make room for a waiting call

    # -- background sync ------------------------------------------------------------------------

    def start(self) -> Budgets:
        if self.conninfo and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="govrix-budgets", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.conninfo:
            self._sync_once_safely(final=True)  # the last settled usage goes to the database
        self._close()
        self._wake_all()

    def wait_loaded(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.loaded and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.loaded

    def _run(self) -> None:
        next_reload = next_sync = 0.0
        while not self._stop.is_set():
            try:
                conn = self._connect()
                now = time.monotonic()
                if self._reload_now or now >= next_reload:
                    self._reload_now = False
                    self._reload_specs(conn)
                    next_reload = time.monotonic() + self.reload_interval
                if now >= next_sync:
                    self._sync_once(conn)
                    next_sync = time.monotonic() + self.sync_interval
                timeout = min(next_sync, next_reload, time.monotonic() + _POLL) - time.monotonic()
                for note in conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                    del note
                    self.stats.notifications += 1
                    self._reload_now = True
            except psycopg.Error as e:
                self._drop()
                self._error(f"budget sync failed: {e}")
                self._stop.wait(min(self.sync_interval, 1.0))
            except Exception:  # a bug of ours must not end enforcement's only refresher
                log.exception("budget thread pass failed")
                self._drop()
                self._stop.wait(min(self.sync_interval, 1.0))

    def _error(self, msg: str) -> None:
        if msg != self.stats.last_error:
            log.warning(msg)
        self.stats.last_error = msg
        self.stats.sync_errors += 1

    def _connect(self) -> psycopg.Connection[Any]:
        """One autocommit connection kept across syncs (a new one each second would cost an
        authentication handshake each time); it also listens on ``govrix_budgets``. Dropped on any
        error and made again at the next pass, which re-reads the specs (a change may have been
        announced while it was away)."""
        assert self.conninfo is not None
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=5,
                application_name="govrix-budgets",
            )
            self._conn.execute("LISTEN govrix_budgets")
            self._reload_now = True
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _close(self) -> None:
        self._drop()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            yield self._connect()
        except psycopg.Error:
            self._drop()
            raise

    def _reload_specs(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT id, agent_id, period, metric, limit_value FROM budgets WHERE enabled"
        ).fetchall()
        self.set_specs(
            BudgetSpec(id=r[0], agent_id=r[1], period=r[2], metric=r[3], limit=float(r[4]))
            for r in rows
        )
        self.stats.reloads += 1

    def _sync_once_safely(self, *, final: bool = False) -> None:
        try:
            with self._connection() as conn:
                self._sync_once(conn, final=final)
        except psycopg.Error as e:
            self._error(f"budget usage sync failed: {e}")

    def _sync_once(self, conn: psycopg.Connection[Any], *, final: bool = False) -> None:
        """Add settled deltas to ``budget_usage``, publish this instance's reservations, read
        every instance's totals back: one transaction."""
        with self._lock:
            self._inflight, self._pending = self._pending, {}
            deltas = dict(self._inflight)
            mine = {k: (t.tokens, t.usd) for k, t in self._reserved.items() if not final}
        gone = self._published.keys() - mine.keys()
        now = time.monotonic()
        # Unchanged rows are rewritten only to stay fresh for the others (RESERVATION_TTL).
        refresh = now - self._published_at > RESERVATION_TTL / 3
        changed = {k: v for k, v in mine.items() if refresh or self._published.get(k) != v}
        sweep = now - self._swept_at > 60
        today = datetime.now(UTC).date()
        try:
            with conn.transaction():
                cur = conn.cursor()
                if deltas:
                    cur.executemany(
                        "INSERT INTO budget_usage "
                        "(usage_key, period, period_start, tokens, usd_micros) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (usage_key, period, period_start) "
                        "DO UPDATE SET tokens = budget_usage.tokens + EXCLUDED.tokens, "
                        "usd_micros = budget_usage.usd_micros + EXCLUDED.usd_micros, "
                        "updated_at = now()",
                        [(k[0], k[1], k[2], t.tokens, t.usd) for k, t in deltas.items()],
                    )
                if changed:
                    cur.executemany(
                        "INSERT INTO budget_reservations "
                        "(instance, usage_key, period, period_start, tokens, usd_micros) "
                        "VALUES (%s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (instance, usage_key, period, period_start) DO UPDATE SET "
                        "tokens = EXCLUDED.tokens, usd_micros = EXCLUDED.usd_micros, "
                        "updated_at = now()",
                        [(self.instance, k[0], k[1], k[2], v[0], v[1]) for k, v in changed.items()],
                    )
                if gone:
                    cur.executemany(
                        "DELETE FROM budget_reservations WHERE instance = %s AND usage_key = %s "
                        "AND period = %s AND period_start = %s",
                        [(self.instance, *k) for k in gone],
                    )
                if sweep:  # rows of instances that stopped without saying so
                    cur.execute(
                        "DELETE FROM budget_reservations WHERE updated_at < now() - interval '1 hour'"
                    )
                rows = conn.execute(
                    "SELECT usage_key, period, period_start, tokens, usd_micros FROM budget_usage "
                    "WHERE (period = 'daily' AND period_start = %s) "
                    "   OR (period = 'monthly' AND period_start = %s)",
                    (today, today.replace(day=1)),
                ).fetchall()
                others = conn.execute(
                    "SELECT usage_key, period, period_start, sum(tokens), sum(usd_micros) "
                    "FROM budget_reservations WHERE instance <> %s "
                    "AND updated_at > now() - make_interval(secs => %s) "
                    "GROUP BY usage_key, period, period_start",
                    (self.instance, RESERVATION_TTL),
                ).fetchall()
        except psycopg.Error:
            with self._lock:  # not written: keep the deltas for the next try
                for k, t in self._inflight.items():
                    self._pending.setdefault(k, _Totals()).add(t.tokens, t.usd)
                self._inflight = {}
            raise
        self._published = mine
        if refresh:
            self._published_at = now
        if sweep:
            self._swept_at = now
        fresh = {(r[0], r[1], r[2]): _Totals(int(r[3]), int(r[4])) for r in rows}
        held = {(r[0], r[1], r[2]): _Totals(int(r[3]), int(r[4])) for r in others}
        with self._lock:
            self._db, self._inflight, self._others = fresh, {}, held
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)  # a new period, or another instance's calls settled
        self.loaded = True
        self.stats.syncs += 1


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def parse_configured(raw: Iterable[dict[str, object]]) -> list[BudgetSpec]:
    """Budgets from the TOML config (``[[budgets]]`` tables); raises ValueError naming the entry."""
    out = []
    for i, item in enumerate(raw):
        try:
            spec = msgspec.convert(item, BudgetSpec)
        except msgspec.ValidationError as e:
            raise ValueError(f"budgets[{i}]: {e}") from e
        if spec.period not in PERIODS or spec.metric not in METRICS or spec.limit < 0:
            raise ValueError(
                f"budgets[{i}]: period must be daily|monthly, metric tokens|usd, limit >= 0"
            )
        out.append(spec)
    return out
