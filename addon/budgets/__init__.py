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

The package, by concern: ``specs.py`` (the limits, their periods and integer units),
``cost.py`` (a call's reservation bound), ``ledger.py`` (:class:`Budgets`: admission,
reservations, settlement, in memory: the hot path), ``sync.py`` (the thread that keeps the ledger
in step with PostgreSQL: limits, usage, published reservations).
"""

from __future__ import annotations

from .cost import Cost, call_cost
from .ledger import IN_FLIGHT_RETRY_AFTER, Budgets, BudgetStats, Denial, Reason, Reservation
from .specs import (
    METRICS,
    PERIODS,
    USD_UNIT,
    BudgetSpec,
    parse_configured,
    period_end,
    period_start,
    seconds_until_reset,
    to_display,
    usd_to_micros,
)
from .sync import RESERVATION_TTL

__all__ = [
    "IN_FLIGHT_RETRY_AFTER",
    "METRICS",
    "PERIODS",
    "RESERVATION_TTL",
    "USD_UNIT",
    "BudgetSpec",
    "BudgetStats",
    "Budgets",
    "Cost",
    "Denial",
    "Reason",
    "Reservation",
    "call_cost",
    "parse_configured",
    "period_end",
    "period_start",
    "seconds_until_reset",
    "to_display",
    "usd_to_micros",
]
