"""The reservation of one call: an upper bound of what it can cost, before it is forwarded.

The token bound is explained in ``addon/providers/tokens.py``; the USD bound is that many tokens
priced (``addon/pricing.py``), rounded up to the micro-dollar.
"""

from __future__ import annotations

from dataclasses import dataclass

from addon.pricing import cost_usd
from addon.providers.base import RequestInfo, Usage
from addon.providers.tokens import prompt_token_bound

from .specs import usd_to_micros


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
