"""What the proxy and the recorder hand to the rules, and keep of their answers."""

from __future__ import annotations

from addon.pii import Finding
from addon.policy.model import Decision, PolicyContext
from addon.providers.base import RequestInfo

__all__ = ["note_decision", "policy_context"]


def policy_context(
    *,
    agent_id: str,
    agent_name: str,
    info: RequestInfo,
    provider: str,
    endpoint: str,
    direction: str,
    findings: list[Finding],
    tokens: int | None,
    cost: float | None,
    tool_name: str | None,
    risk_level: str | None,
    provenance: str | None = None,
    destination: str | None = None,
) -> PolicyContext:
    """The facts of one call, as the rules see them."""
    return PolicyContext(
        agent_id=agent_id,
        agent_name=agent_name,
        model=info.model,
        provider=provider,
        endpoint=endpoint,
        token_count=tokens,
        cost_usd=cost,
        pii_detected=bool(findings),
        pii_types=sorted({f.type for f in findings}),
        tool_name=tool_name,
        direction=direction,
        risk_level=risk_level,
        provenance=provenance,
        destination=destination,
    )


def note_decision(decisions: list[dict[str, object]], phase: str, d: Decision) -> None:
    """What a policy decided, as kept in the event's ``policy_decisions``."""
    if not d.matched:
        return
    note: dict[str, object] = {"phase": phase, "matched": list(d.matched)}
    if d.block is not None:
        note["block"] = d.block.rule
    if d.tags:
        note["tags"] = list(d.tags)
    if d.logs:
        note["logs"] = list(d.logs)
    if d.redact:
        note["redact"] = True
    decisions.append(note)
