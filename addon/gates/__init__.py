"""The request side of the hot path: an ordered pipeline of gates, each answering
``Refusal | None`` (``addon/refusals.py``).

In order, as the conductor (``addon/proxy.py``) runs them:

1. identify (``addon/identity.py``): who is calling; cannot fail (falls back to the source IP).
2. kill switch (``killswitch.py``): the agent's status alone; every host, every method, CONNECT.
3. route (``addon/route.py``): LLM provider, MCP server, or another host (metadata only).
4. parse (``parse.py``): the body, when a later gate or streaming needs it; never raises.
5. score (``score.py``): an MCP ``tools/call`` scored inline (feeds ``risk_level``).
6. budget (``budget.py``): reserve an upper bound of the call's cost, or 429.
7. policy (``policy.py``): block 403 / tag / redact / log.
8. pii (``pii.py``): the redaction a policy asked for, applied to the forwarded body.

No input skips a gate: a gate that needs a body that cannot be parsed applies
``GOVRIX_UNPARSEABLE`` (``refuse``, the default, or ``forward``); a gate that raises applies
``GOVRIX_GATE_ERRORS`` (``refuse``, the default, or ``forward``). Either way the call is recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from mitmproxy import http

from addon.call import Call
from addon.refusals import Refusal


@dataclass(frozen=True, slots=True)
class Hold:
    """ "Not yet": the call waits, without blocking the event loop, for ``until()`` to answer.

    The conductor intercepts the flow, awaits ``until()`` in a task, and goes on with the next
    gates (or refuses) before resuming it. Where nothing can wait (no running event loop: tests,
    offline replay) ``now`` is the answer.
    """

    until: Callable[[], Awaitable[Refusal | None]]
    now: Refusal


class Gate(Protocol):
    """One question about a call; ``name`` appears in metrics, logs and refusals."""

    name: str

    def __call__(self, call: Call, flow: http.HTTPFlow) -> Refusal | Hold | None: ...
