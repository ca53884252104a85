"""Budgets: reserve an upper bound of what the call can cost before it is forwarded, or 429.

The bound is ``addon.budgets.call_cost`` (``addon/budgets/cost.py``: the decoded body's bytes,
the request's own completion limit, priced when a USD budget applies); the reservation is settled
with the real usage when the recorder has read it (``Settle``), so concurrent calls cannot
overshoot by more than the last admitted call (``addon/budgets/``). A call refused only because calls in flight hold the rest
waits for them (``GOVRIX_BUDGET_WAIT`` seconds, a :class:`Hold`) and is admitted if it then fits.
A body that cannot be parsed is refused under ``GOVRIX_UNPARSEABLE=refuse``, bounded by its
size under ``forward``.
"""

from __future__ import annotations

from mitmproxy import http

from addon.budgets import Budgets, Cost, Denial, Reservation, call_cost
from addon.call import Call
from addon.gates import Hold
from addon.gates.parse import unreadable
from addon.refusals import Refusal


class BudgetGate:
    name = "budget"

    def __init__(
        self, budgets: Budgets, *, default_completion: int, unparseable: str, wait: float
    ) -> None:
        self.budgets = budgets
        self.default_completion = default_completion
        self.unparseable = unparseable
        self.wait = wait

    def applies(self, call: Call) -> bool:
        return self.budgets.applies(call.identity.agent_id)[0]

    def __call__(self, call: Call, flow: http.HTTPFlow) -> Refusal | Hold | None:
        agent = call.identity
        has_budget, needs_usd = self.budgets.applies(agent.agent_id)
        if not has_budget:
            return None
        if (refusal := unreadable(call, self.name, self.unparseable)) is not None:
            return refusal
        cost = call_cost(
            call.info,
            call.route.provider_name,
            body_bytes=len(call.body) if call.body is not None else call.request_bytes,
            default_completion=self.default_completion,
            needs_usd=needs_usd,
        )
        res = self.budgets.reserve(agent.agent_id, cost)
        if isinstance(res, Reservation):
            self._hold(call, res)
            return None
        if res.reason == "reserved" and self.wait > 0:
            return Hold(lambda: self._admit(call, cost), budget_refusal(res, agent.name))
        return budget_refusal(res, agent.name)

    async def _admit(self, call: Call, cost: Cost) -> Refusal | None:
        res = await self.budgets.admit(call.identity.agent_id, cost, wait=self.wait)
        if isinstance(res, Denial):
            return budget_refusal(res, call.identity.name)
        self._hold(call, res)
        return None

    @staticmethod
    def _hold(call: Call, res: Reservation) -> None:
        if res.keys:
            call.reservation = res

    def release(self, call: Call) -> None:
        """A later gate refused the call: nothing was spent."""
        if call.reservation is not None:
            self.budgets.settle(call.reservation, 0, 0.0)
            call.reservation = None


def budget_refusal(denial: Denial, agent_name: str) -> Refusal:
    """429 with an honest Retry-After (403 when the model cannot be priced: retrying won't help)."""
    who = f"agent {agent_name}" if denial.spec.agent_id else "all agents"
    if denial.reason == "unpriced":
        return Refusal(403, "budget_unpriced", denial.message(who), extra={"budget": denial.body()})
    return Refusal(
        429,
        "budget_exceeded",
        denial.message(who),
        extra={"budget": denial.body()},
        headers={"retry-after": str(denial.retry_after)},
    )
