"""Budgets: reserve before forwarding, settle after, never a database round trip in a hook.

Limits come from the ``budgets`` table (re-read every few seconds) and from the config file.
Usage per (key, period) is ``db + inflight + pending``: ``db`` is what PostgreSQL said at the last
sync (every proxy instance's settled usage), ``pending`` what this proxy settled since, ``inflight``
what it is writing right now. A background thread adds the deltas to ``budget_usage`` and reads
the totals back once a second, so usage survives restarts and is shared between instances.

A request is admitted when, for every budget that applies to it (its agent's and the global ones,
daily and monthly, tokens and USD), ``used + reserved + estimate <= limit``; the estimate is an
upper bound (prompt estimate + ``max_tokens``, or a default completion allowance). Reservations
are released when the call settles, with its real usage. So N concurrent requests admit at most
what fits, plus the difference between estimates and reality of one in-flight request.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import psycopg

log = logging.getLogger("govrix.budgets")

PERIODS = ("daily", "monthly")


class BudgetSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One limit. ``agent_id`` None means global."""

    period: str  # "daily" | "monthly"
    metric: str  # "tokens" | "usd"
    limit: float
    agent_id: str | None = None

    @property
    def usage_key(self) -> str:
        return "global" if self.agent_id is None else "agent:" + self.agent_id

    def describe(self) -> dict[str, object]:
        return {
            "scope": "global" if self.agent_id is None else "agent",
            "agent_id": self.agent_id,
            "period": self.period,
            "metric": self.metric,
            "limit": self.limit,
        }


def period_start(period: str, today: date) -> date:
    return today if period == "daily" else today.replace(day=1)


def seconds_until_reset(period: str, now: datetime) -> int:
    """Seconds until the period rolls over (UTC): next midnight, or the first of next month."""
    today = now.date()
    if period == "daily":
        end = datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp() + 86_400
    else:
        days = calendar.monthrange(today.year, today.month)[1]
        end = datetime(today.year, today.month, 1, tzinfo=UTC).timestamp() + days * 86_400
    return max(1, int(end - now.timestamp()) + 1)


@dataclass(slots=True)
class Reservation:
    keys: tuple[tuple[str, str, date], ...]
    tokens: int
    usd: float


@dataclass(slots=True)
class Denial:
    spec: BudgetSpec
    used: float
    retry_after: int


@dataclass
class _Totals:
    tokens: float = 0.0
    usd: float = 0.0

    def add(self, tokens: float, usd: float) -> None:
        self.tokens += tokens
        self.usd += usd

    def get(self, metric: str) -> float:
        return self.tokens if metric == "tokens" else self.usd


_Key = tuple[str, str, date]  # (usage_key, period, period_start)


@dataclass
class BudgetStats:
    denied: int = 0
    syncs: int = 0
    sync_errors: int = 0
    last_error: str | None = None


class Budgets:
    """In-memory budget state kept in step with PostgreSQL by one background thread."""

    def __init__(
        self,
        conninfo: str | None,
        *,
        configured: Iterable[BudgetSpec] = (),
        sync_interval: float = 1.0,
        reload_interval: float = 5.0,
    ) -> None:
        self.conninfo = conninfo
        self.configured = list(configured)
        self.sync_interval = sync_interval
        self.reload_interval = reload_interval
        self._lock = threading.Lock()
        self._specs: list[BudgetSpec] = list(self.configured)
        self._by_agent: dict[str, list[BudgetSpec]] = {}
        self._global: list[BudgetSpec] = []
        self._index()
        self._db: dict[_Key, _Totals] = {}
        self._inflight: dict[_Key, _Totals] = {}
        self._pending: dict[_Key, _Totals] = {}
        self._reserved: dict[_Key, _Totals] = {}
        self.stats = BudgetStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self.loaded = conninfo is None

    # -- hot path -------------------------------------------------------------------------------

    def active(self) -> bool:
        return bool(self._specs)

    def reserve(
        self, agent_id: str, tokens: int, usd: float | None, now: datetime | None = None
    ) -> Reservation | Denial:
        """Admit and reserve, or name the budget that would be exceeded."""
        specs = self._global + self._by_agent.get(agent_id, [])
        if not specs:
            return Reservation((), 0, 0.0)
        now = now or datetime.now(UTC)
        today = now.date()
        with self._lock:
            for spec in specs:
                key = (spec.usage_key, spec.period, period_start(spec.period, today))
                used = self._used(key, spec.metric)
                estimate = tokens if spec.metric == "tokens" else (usd or 0.0)
                if used + estimate > spec.limit:
                    self.stats.denied += 1
                    return Denial(spec, used, seconds_until_reset(spec.period, now))
            keys = {
                (spec.usage_key, spec.period, period_start(spec.period, today)) for spec in specs
            }
            for key in keys:
                self._reserved.setdefault(key, _Totals()).add(tokens, usd or 0.0)
        return Reservation(tuple(keys), tokens, usd or 0.0)

    def settle(self, res: Reservation, tokens: int, usd: float | None) -> None:
        """Release the reservation and count what the call really used."""
        if not res.keys:
            return
        with self._lock:
            for key in res.keys:
                r = self._reserved.get(key)
                if r is not None:
                    r.add(-res.tokens, -res.usd)
                self._pending.setdefault(key, _Totals()).add(tokens, usd or 0.0)

    def applies(self, agent_id: str) -> tuple[bool, bool]:
        """(any budget applies to this agent, one of them is in USD)."""
        specs = self._global + self._by_agent.get(agent_id, [])
        return bool(specs), any(s.metric == "usd" for s in specs)

    def _used(self, key: _Key, metric: str) -> float:
        total = 0.0
        for d in (self._db, self._inflight, self._pending, self._reserved):
            t = d.get(key)
            if t is not None:
                total += t.get(metric)
        return total

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
            self._sync_once_safely()  # the last settled usage goes to the database
        self._close()

    def wait_loaded(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.loaded and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.loaded

    def _run(self) -> None:
        next_reload = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_reload:
                try:
                    self._reload_specs()
                    next_reload = time.monotonic() + self.reload_interval
                except psycopg.Error as e:
                    self._error(f"budget reload failed: {e}")
            self._sync_once_safely()
            self._stop.wait(self.sync_interval)

    def _error(self, msg: str) -> None:
        if msg != self.stats.last_error:
            log.warning(msg)
        self.stats.last_error = msg
        self.stats.sync_errors += 1

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """One connection kept across syncs (a new one each second would cost an authentication
        handshake each time); dropped on any error and made again at the next sync."""
        assert self.conninfo is not None
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo, connect_timeout=5, application_name="govrix-budgets"
            )
        try:
            yield self._conn
        except psycopg.Error:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            raise

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _reload_specs(self) -> None:
        with self._connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT agent_id, period, metric, limit_value FROM budgets WHERE enabled"
            ).fetchall()
        self.set_specs(
            BudgetSpec(agent_id=r[0], period=r[1], metric=r[2], limit=float(r[3])) for r in rows
        )

    def _sync_once_safely(self) -> None:
        try:
            self._sync_once()
        except psycopg.Error as e:
            self._error(f"budget usage sync failed: {e}")

    def _sync_once(self) -> None:
        assert self.conninfo is not None
        with self._lock:
            self._inflight, self._pending = self._pending, {}
            deltas = dict(self._inflight)
        today = datetime.now(UTC).date()
        try:
            with self._connection() as conn, conn.transaction():
                if deltas:
                    conn.cursor().executemany(
                        "INSERT INTO budget_usage (usage_key, period, period_start, tokens, usd) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (usage_key, period, period_start) "
                        "DO UPDATE SET tokens = budget_usage.tokens + EXCLUDED.tokens, "
                        "usd = budget_usage.usd + EXCLUDED.usd, updated_at = now()",
                        [(k[0], k[1], k[2], round(t.tokens), t.usd) for k, t in deltas.items()],
                    )
                rows = conn.execute(
                    "SELECT usage_key, period, period_start, tokens, usd FROM budget_usage "
                    "WHERE (period = 'daily' AND period_start = %s) "
                    "   OR (period = 'monthly' AND period_start = %s)",
                    (today, today.replace(day=1)),
                ).fetchall()
        except psycopg.Error:
            with self._lock:  # not written: keep the deltas for the next try
                for k, t in self._inflight.items():
                    self._pending.setdefault(k, _Totals()).add(t.tokens, t.usd)
                self._inflight = {}
            raise
        fresh = {(r[0], r[1], r[2]): _Totals(float(r[3]), float(r[4])) for r in rows}
        with self._lock:
            self._db, self._inflight = fresh, {}
        self.loaded = True
        self.stats.syncs += 1


def parse_configured(raw: Iterable[dict[str, object]]) -> list[BudgetSpec]:
    """Budgets from the TOML config (``[[budgets]]`` tables); raises ValueError naming the entry."""
    out = []
    for i, item in enumerate(raw):
        try:
            spec = msgspec.convert(item, BudgetSpec)
        except msgspec.ValidationError as e:
            raise ValueError(f"budgets[{i}]: {e}") from e
        if spec.period not in PERIODS or spec.metric not in ("tokens", "usd") or spec.limit < 0:
            raise ValueError(
                f"budgets[{i}]: period must be daily|monthly, metric tokens|usd, limit >= 0"
            )
        out.append(spec)
    return out
