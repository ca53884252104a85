"""The budget state of this proxy: admission, reservations and settlement, in memory.

Per (usage key, period) it keeps settled usage (``spent``: the database's totals at the last sync
plus what this proxy settled since) and calls in flight (``reserved``: this proxy's own, plus
what the other instances published). :meth:`Budgets.reserve` and :meth:`Budgets.settle` are the
hot path: a lock and a few dict lookups, no I/O. ``sync.py`` keeps the state in step with
PostgreSQL from a background thread, through the ``take_settled`` / ``synced`` hand-over below.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from .cost import Cost
from .specs import (
    USD_UNIT,
    BudgetSpec,
    Key,
    period_end,
    period_start,
    seconds_until_reset,
    to_display,
    usd_to_micros,
)
from .sync import BudgetSync

#: ``retry_after`` of a call refused only for room held by calls in flight.
IN_FLIGHT_RETRY_AFTER = 1

Reason = Literal["spent", "reserved", "unpriced"]


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


def _sum(maps: Iterable[dict[Key, _Totals]], key: Key, metric: str) -> int:
    total = 0
    for d in maps:
        t = d.get(key)
        if t is not None:
            total += t.get(metric)
    return total


class Budgets:
    """In-memory budget state; with ``conninfo``, kept in step with PostgreSQL by ``sync.py``."""

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
        self.unpriced = unpriced
        self._lock = threading.Lock()
        self._specs: list[BudgetSpec] = list(self.configured)
        self._by_agent: dict[str, list[BudgetSpec]] = {}
        self._global: list[BudgetSpec] = []
        self._index()
        self._db: dict[Key, _Totals] = {}
        self._inflight: dict[Key, _Totals] = {}
        self._pending: dict[Key, _Totals] = {}
        self._reserved: dict[Key, _Totals] = {}
        self._others: dict[Key, _Totals] = {}  # other instances' published reservations
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.stats = BudgetStats()
        self.loaded = conninfo is None
        self._sync = (
            BudgetSync(
                self,
                conninfo,
                instance=instance,
                sync_interval=sync_interval,
                reload_interval=reload_interval,
            )
            if conninfo
            else None
        )

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
    def _key(spec: BudgetSpec, today: date) -> Key:
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

    # -- the background sync ----------------------------------------------------------------------

    def start(self) -> Budgets:
        if self._sync is not None:
            self._sync.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._sync is not None:
            self._sync.stop(timeout)  # the last settled usage goes to the database
        self._wake_all()

    def wait_loaded(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.loaded and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.loaded

    def take_settled(
        self, *, final: bool
    ) -> tuple[dict[Key, tuple[int, int]], dict[Key, tuple[int, int]]]:
        """For the sync: (tokens, micro-dollars) settled since the last one, kept aside until
        :meth:`synced` or :meth:`unsent`; and this proxy's reservations (none when ``final``)."""
        with self._lock:
            self._inflight, self._pending = self._pending, {}
            deltas = {k: (t.tokens, t.usd) for k, t in self._inflight.items()}
            mine = {k: (t.tokens, t.usd) for k, t in self._reserved.items() if not final}
        return deltas, mine

    def unsent(self) -> None:
        """The sync did not write what it took: keep it for the next try."""
        with self._lock:
            for k, t in self._inflight.items():
                self._pending.setdefault(k, _Totals()).add(t.tokens, t.usd)
            self._inflight = {}

    def synced(self, spent: Iterable[Sequence[Any]], held: Iterable[Sequence[Any]]) -> None:
        """The database's rows, ``(usage_key, period, period_start, tokens, usd_micros)``: every
        instance's settled usage (what was taken is in it now), the others' reservations."""
        fresh = {(r[0], r[1], r[2]): _Totals(int(r[3]), int(r[4])) for r in spent}
        others = {(r[0], r[1], r[2]): _Totals(int(r[3]), int(r[4])) for r in held}
        with self._lock:
            self._db, self._inflight, self._others = fresh, {}, others
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)  # a new period, or another instance's calls settled
        self.loaded = True


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
