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
tokens and USD), and, with a database, while anything is left of what this proxy holds *on
lease* (``leases.py``, ``budget_leases``): local admission stays in memory; the sync thread
grants leases in one short locked transaction, never beyond ``limit - settled - the other
instances' unexpired leases``. Because no call in flight can cost more than its reservation,
each instance overshoots its lease, and all of them the budget, by at most the real cost of the
last call it admitted: one call per proxy instance, however stale the views. Leases are asked
for ahead of need (calls in flight plus a chunk: ``CHUNK_FRACTION`` of the room nobody holds, at
least the largest call waiting; one call's worth once a key is idle ``LEASE_IDLE`` s), topped up
when below half that chunk or when a call waits (at most every ``leases.MIN_GAP`` s), shrunk by
what was settled and what is not needed at each sync, returned at ``stop()``. A lease counts for
``LEASE_TTL`` s after the sync that renewed it: a crashed instance holds nothing after that.
**Outage:** while the database is out of reach the current lease is used until it expires; then
admission falls back to this proxy's own view (``spent + reserved < limit`` as last synced,
exactly as before leases), an explicit choice: per-instance, not shared, enforcement.

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
``cost.py`` (a call's reservation bound), ``leases.py`` (how much lease to ask for and to
grant), ``ledger.py`` (:class:`Budgets`: admission,
reservations, settlement, in memory: the hot path), ``sync.py`` (the thread that keeps the ledger
in step with PostgreSQL: limits, usage, published reservations).
"""

from __future__ import annotations

from .cost import Cost, call_cost
from .leases import CHUNK_FRACTION, LEASE_IDLE, LEASE_TTL
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
    "CHUNK_FRACTION",
    "IN_FLIGHT_RETRY_AFTER",
    "LEASE_IDLE",
    "LEASE_TTL",
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
