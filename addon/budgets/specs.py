"""The limits: one :class:`BudgetSpec` per ``budgets`` row or ``[[budgets]]`` table, its periods
(UTC days and months) and its integer units (tokens, or micro-dollars: ``USD_UNIT``).

Integers so that a limit of exactly 10 admits exactly what fits and a long day of small costs
never drifts. Pure code: the rows are read by ``sync.py``, the config file by ``addon/config.py``.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable
from datetime import UTC, date, datetime

import msgspec

PERIODS = ("daily", "monthly")
METRICS = ("tokens", "usd")
#: Micro-dollars per dollar: every USD amount in budget state is an integer of these.
USD_UNIT = 1_000_000

#: Where usage is counted: (``BudgetSpec.usage_key``, period, the period's first day).
Key = tuple[str, str, date]


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
