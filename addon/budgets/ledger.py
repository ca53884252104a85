"""The budget state of this proxy: admission, reservations, leases and settlement, in memory.

Per (usage key, period) it keeps settled usage (``spent``: the database's totals at the last sync
plus what this proxy settled since), calls in flight (``reserved``: this proxy's own, plus what
the other instances published) and, with a database, what this proxy holds on lease
(``budget_leases``). :meth:`Budgets.reserve` and :meth:`Budgets.settle` are the hot path: a lock
and a few dict lookups, no I/O. ``sync.py`` keeps the state in step with PostgreSQL from a
background thread, through the ``take_settled`` / ``synced`` hand-over below; the ledger decides
how much lease to ask for (:data:`CHUNK_FRACTION`, :data:`LEASE_IDLE`), the database how much
it grants.
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
from .leases import LEASE_IDLE, LEASE_MARGIN, LEASE_TTL, Ask, headroom
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

    def put(self, metric: str, value: int) -> None:
        if metric == "tokens":
            self.tokens = value
        else:
            self.usd = value

    def raise_to(self, metric: str, value: int) -> None:
        if metric == "tokens":
            self.tokens = max(self.tokens, value)
        else:
            self.usd = max(self.usd, value)

    def pair(self) -> tuple[int, int]:
        return self.tokens, self.usd


@dataclass
class BudgetStats:
    denied: int = 0
    waited: int = 0
    syncs: int = 0
    reloads: int = 0
    notifications: int = 0
    sync_errors: int = 0
    #: Syncs asked for ahead of the interval: a call waiting for lease, or a lease running low.
    nudged_syncs: int = 0
    last_error: str | None = None
    denied_by_reason: dict[str, int] = field(default_factory=dict)


def _sum(maps: Iterable[dict[Key, _Totals]], key: Key, metric: str) -> int:
    total = 0
    for d in maps:
        t = d.get(key)
        if t is not None:
            total += t.get(metric)
    return total


@dataclass(slots=True)
class Take:
    """What the sync takes from the ledger for one pass (see :meth:`Budgets.take_settled`)."""

    deltas: dict[Key, tuple[int, int]]
    mine: dict[Key, tuple[int, int]]
    asks: dict[Key, Ask]
    started: float  # monotonic, before the transaction began


class Budgets:
    """In-memory budget state; with ``conninfo``, kept in step with PostgreSQL by ``sync.py``,
    and admitting only against budget held on lease while that lease is valid."""

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
        # Leases (a database only): what this proxy holds, counted until ``_lease_until``
        # (monotonic); the others' unexpired leases as last read; per key, when a call last asked
        # (``_seen``), the largest call seen, the largest refused for want of lease since the last
        # sync, and the watermark below which the sync is nudged.
        self._leasing = conninfo is not None
        self._lease: dict[Key, _Totals] = {}
        self._lease_until = 0.0
        self._others_leased: dict[Key, _Totals] = {}
        self._seen: dict[Key, float] = {}
        self._biggest: dict[Key, _Totals] = {}
        self._short: dict[Key, _Totals] = {}
        self._low: dict[Key, _Totals] = {}
        self._nudge = False
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
        mono = time.monotonic()
        with self._lock:
            # Always against this proxy's own view; while the lease is valid, against the lease
            # too. Without one (no database, not reached yet, or out of reach for longer than
            # a lease lives) the own view alone decides, as before leases.
            leased = self._leasing and mono < self._lease_until
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
                if self._leasing:
                    self._seen[key] = mono
                    self._biggest.setdefault(key, _Totals()).raise_to(spec.metric, need)
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
                # This proxy's own view: settled usage and every published call in flight.
                full = spent + reserved >= limit
                if leased and not full:
                    # And admitted while anything is left of the lease: no call in flight costs
                    # more than its reservation, so this instance overshoots its lease, and the
                    # holders the budget, by at most the last call each admitted.
                    lease = self._lease.get(key)
                    held = lease.get(spec.metric) if lease is not None else 0
                    used = _sum((self._reserved, self._inflight, self._pending), key, spec.metric)
                    full = used >= held
                    if full:
                        self._short.setdefault(key, _Totals()).raise_to(spec.metric, need)
                        self._nudge = True
                    else:
                        low = self._low.get(key)
                        if held - used - need < (low.get(spec.metric) if low else 0):
                            self._nudge = True  # top up ahead of need
                if full and first_reserved is None:
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

    @property
    def nudged(self) -> bool:
        """A call waits for lease, or a lease fell below its watermark: sync ahead of time."""
        return self._nudge

    def leasing(self) -> bool:
        """True while admission is against leases (a database, reached less than
        :data:`~addon.budgets.leases.LEASE_TTL` ago); False: against this proxy's own view."""
        return self._leasing and time.monotonic() < self._lease_until

    def held(self, spec: BudgetSpec, now: datetime | None = None) -> int:
        """What this proxy holds on lease for ``spec``'s key, in its integer units."""
        key = self._key(spec, (now or datetime.now(UTC)).date())
        with self._lock:
            lease = self._lease.get(key)
            return lease.get(spec.metric) if lease is not None else 0

    def take_settled(self, *, final: bool, specs: Iterable[BudgetSpec] | None = None) -> Take:
        """For the sync: (tokens, micro-dollars) settled since the last one, kept aside until
        :meth:`synced` or :meth:`unsent`; this proxy's reservations (none when ``final``); and,
        with a database, what to ask for on lease per key (nothing kept when ``final``: the
        leases are returned). ``specs``: limits just read, applied by :meth:`synced`.

        An ask that returns part of a lease lowers the lease here at once: calls admitted while
        the transaction runs must fit what the database will still count as held."""
        started = time.monotonic()
        today = datetime.now(UTC).date()
        with self._lock:
            self._inflight, self._pending = self._pending, {}
            deltas = {k: (t.tokens, t.usd) for k, t in self._inflight.items()}
            mine = {k: (t.tokens, t.usd) for k, t in self._reserved.items() if not final}
            asks = self._asks(
                [*self.configured, *specs] if specs is not None else self._specs,
                today,
                started,
                final=final,
            )
            self._short, self._nudge = {}, False
        return Take(deltas, mine, asks, started)

    def _asks(
        self, specs: Sequence[BudgetSpec], today: date, mono: float, *, final: bool
    ) -> dict[Key, Ask]:
        if not self._leasing:
            return {}
        limits: dict[Key, list[int | None]] = {}
        for spec in specs:
            lim = limits.setdefault(self._key(spec, today), [None, None])
            i = 0 if spec.metric == "tokens" else 1
            old = lim[i]
            lim[i] = spec.limit_units if old is None else min(old, spec.limit_units)
        asks: dict[Key, Ask] = {}
        for key in limits.keys() | self._lease.keys() | self._reserved.keys():
            lim = limits.get(key, [None, None])
            seen = self._seen.setdefault(key, mono)  # a new key counts as busy for a while
            active = mono - seen < LEASE_IDLE
            lease = self._lease.get(key) or _Totals()
            want: list[int] = []
            floor: list[int] = []
            low = _Totals()
            for i, metric in enumerate(("tokens", "usd")):
                limit = lim[i]
                held = lease.get(metric)
                settled = _get(self._inflight, key, metric)
                inflight = _get(self._reserved, key, metric)
                w = 0
                if limit is not None and not final:
                    spent = _sum((self._db, self._inflight), key, metric)
                    free = limit - spent - _get(self._others_leased, key, metric) - inflight
                    head = headroom(
                        free,
                        active=active,
                        short=_get(self._short, key, metric),
                        biggest=_get(self._biggest, key, metric),
                    )
                    w = inflight + head
                    low.raise_to(metric, head // 2)
                want.append(w)
                floor.append(max(min(held - settled, w), 0))
                if held > w + settled:  # returning: what is admitted now must fit what stays
                    lease.put(metric, w + settled)
            self._low[key] = low
            if any(want) or any(floor) or key in self._lease:
                asks[key] = Ask(key, (lim[0], lim[1]), (want[0], want[1]), (floor[0], floor[1]))
        # forget keys nobody asks about any more (past periods, removed budgets)
        for key in list(self._seen):
            if key not in asks and key not in limits:
                self._seen.pop(key, None)
                self._biggest.pop(key, None)
                self._low.pop(key, None)
        return asks

    def unsent(self, specs: Iterable[BudgetSpec] | None = None) -> None:
        """The sync did not write what it took: keep it for the next try (a lease lowered by the
        ask stays lowered: holding less than the database counts is safe). ``specs``: limits
        read before the failure, applied all the same."""
        with self._lock:
            for k, t in self._inflight.items():
                self._pending.setdefault(k, _Totals()).add(t.tokens, t.usd)
            self._inflight = {}
        if specs is not None:
            self.set_specs(specs)

    def synced(
        self,
        spent: Iterable[Sequence[Any]],
        held: Iterable[Sequence[Any]],
        *,
        leases: dict[Key, tuple[int, int]] | None = None,
        others_leased: Iterable[Sequence[Any]] = (),
        specs: Iterable[BudgetSpec] | None = None,
        started: float = 0.0,
    ) -> None:
        """The database's rows, ``(usage_key, period, period_start, tokens, usd_micros)``: every
        instance's settled usage (what was taken is in it now), the others' reservations and
        unexpired leases; ``leases``: what this proxy holds now, counted until ``LEASE_TTL``
        after ``started``; ``specs``: the limits read with them (applied in the same step, so a
        new budget never applies before its lease)."""
        fresh = {(r[0], r[1], r[2]): _Totals(int(r[3]), int(r[4])) for r in spent}
        others = {(r[0], r[1], r[2]): _Totals(int(r[3]), int(r[4])) for r in held}
        leased = {(r[0], r[1], r[2]): _Totals(int(r[3]), int(r[4])) for r in others_leased}
        with self._lock:
            if specs is not None:
                self._specs = [*self.configured, *specs]
                self._index()
            self._db, self._inflight, self._others = fresh, {}, others
            if leases is not None:
                self._lease = {k: _Totals(*v) for k, v in leases.items() if any(v)}
                self._others_leased = leased
                self._lease_until = started + LEASE_TTL - LEASE_MARGIN
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)  # a new period, another instance's calls settled, a lease granted
        self.loaded = True


def _get(d: dict[Key, _Totals], key: Key, metric: str) -> int:
    t = d.get(key)
    return t.get(metric) if t is not None else 0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
