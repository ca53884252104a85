"""What the proxy answers instead of the upstream: one record per refusal, one way to send it.

Every gate (``addon/gates/``) answers ``Refusal | None``; the conductor turns a refusal into the
response with :func:`response`. The body is JSON ``{"error": code, "message": ..., "agent_id": ...}``
plus what the gate adds (the budget, the rule, the risk). An MCP client gets a JSON-RPC error for
its call instead (HTTP 200), which it can surface to its model, rather than an HTTP error its
transport may treat as a broken session. ``x-govrix-decision`` names the code in every case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from mitmproxy import http

from addon.mcp import rpc_error

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A gate's "no": the HTTP status, a stable code, a human message, what else the body says."""

    status: int
    code: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def agent_blocked(name: str) -> Refusal:
    return Refusal(403, "agent_blocked", f"agent {name} is blocked by governance policy")


def agent_retired(name: str) -> Refusal:
    return Refusal(403, "agent_retired", f"agent {name} is retired")


def governance_unavailable() -> Refusal:
    return Refusal(
        503,
        "governance_unavailable",
        "the agent table is not available and fail_mode is fail_closed",
    )


def proxy_auth_required() -> Refusal:
    return Refusal(
        407,
        "proxy_auth_required",
        "send Proxy-Authorization: Basic <agent>:<token>",
        headers={"proxy-authenticate": 'Basic realm="govrix"'},
    )


def unparseable(gate: str, why: str) -> Refusal:
    """A body the ``gate`` must read and cannot (``GOVRIX_UNPARSEABLE=refuse``)."""
    return Refusal(
        400,
        "unparseable_request",
        f"the request body cannot be parsed, and {gate} rules apply to this call",
        extra={"gate": gate, "parse_error": why[:200]},
    )


def gate_failed(gate: str) -> Refusal:
    """A gate of ours raised (``GOVRIX_GATE_ERRORS=refuse``): fail closed, never open."""
    return Refusal(
        503,
        "governance_error",
        f"the {gate} check failed inside the proxy; the call was not forwarded",
        extra={"gate": gate},
    )


def client_closed() -> Refusal:
    """The client went away while its call waited (nobody reads it; it names the event)."""
    return Refusal(499, "client_closed", "the client went away before the call was forwarded")


def policy_blocked(rule: str, message: str | None) -> Refusal:
    return Refusal(
        403, "policy_blocked", message or f"blocked by policy rule {rule}", extra={"rule": rule}
    )


def response(
    refusal: Refusal,
    *,
    agent_id: str | None,
    rpc: bool = False,
    rpc_id: Any = None,
    risk: tuple[str, int] | None = None,
) -> http.Response:
    """The response that carries ``refusal`` (a JSON-RPC error when ``rpc``)."""
    doc: dict[str, Any] = {"error": refusal.code, "message": refusal.message}
    if agent_id is not None:
        doc["agent_id"] = agent_id
    doc |= refusal.extra
    if risk is not None:
        doc |= {"risk_level": risk[0], "score": risk[1]}
    headers = {"content-type": "application/json", "x-govrix-decision": refusal.code}
    headers |= refusal.headers
    if rpc:
        return http.Response.make(200, rpc_error(rpc_id, refusal.message, doc), headers)
    return http.Response.make(refusal.status, _json.encode(doc), headers)
