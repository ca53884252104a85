"""The request event of a call, from its ``Begin``: the request parsed (model, prompt estimate,
tools offered, or the MCP tool called), and PII scanned when the hot path did not scan it."""

from __future__ import annotations

from typing import Any

import msgspec

from addon import metrics, pii
from addon.event import Event
from addon.mcp import MCP
from addon.providers import parse_request, provider_by_name
from addon.recorder.calls import OpenCall, decode_body, ts
from addon.wire import Begin


def request_event(b: Begin, *, pii_scan: bool) -> tuple[Event, OpenCall]:
    """The request event of ``b``, and the call as it stays open until its ``End``."""
    provider = MCP if b.provider == MCP.name else provider_by_name(b.provider)
    info = parse_request(provider, b.endpoint, b.path, decode_body(b.body, b.encoding))
    if info.parse_error:
        metrics.child(metrics.PARSE_ERRORS, provider.name, "request").inc()
    findings = b.findings
    if findings is None:
        findings = pii.scan_segments(info.text) if pii_scan and info.text else []
    if provider is MCP and b.tool_name is not None:
        entry: dict[str, Any] = {"name": b.tool_name} | (b.risk or {})
        tools: list[dict[str, Any]] | None = [entry]
    else:
        tools = [{"name": t, "offered": True} for t in info.tools] or None
    event = Event(
        id=b.request_id,
        agent_id=b.agent_id,
        session_id=b.session_id,
        timestamp=ts(b.started),
        direction="request",
        provider=provider.name,
        endpoint=b.endpoint,
        model=info.model,
        prompt_tokens=info.estimated_prompt_tokens or None,
        usage_source="estimated" if info.estimated_prompt_tokens else "missing",
        status_code=b.status_code,
        compliance_tag=b.compliance_tag,
        pii_detected=bool(findings),
        pii_types=sorted({f.type for f in findings}),
        pii_findings=[msgspec.structs.asdict(f) for f in findings] or None,
        tool_calls=tools,
        policy_decisions=b.policy_decisions or None,
        error=b.error,
        parse_error=info.parse_error,
        request_bytes=b.request_bytes,
        host=b.host,
        method=b.method,
    )
    call = OpenCall(b, provider, info, b.compliance_tag, b.policy_decisions, resent=b.resent)
    return event, call
