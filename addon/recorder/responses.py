"""The response event of a call, from its ``End``: the response parsed (buffered or streamed),
PII in its text and tool-call arguments, usage and cost, the budget's ``Settle``, the tags of
response-phase policies, and the call's latency metrics."""

from __future__ import annotations

from typing import Any

import msgspec

from addon import metrics, pii
from addon.event import Event
from addon.policy import PolicyStore, note_decision, policy_context
from addon.pricing import cost_usd
from addon.providers import ResponseInfo, Usage, parse_response
from addon.recorder.calls import OpenCall, decode_body, feed, ts
from addon.wire import UNKNOWN_USAGE, End, Settle


def read_response(
    call: OpenCall, e: End, *, pii_scan: bool
) -> tuple[ResponseInfo, list[pii.Finding]]:
    """What the response said, and the PII found in its text and its tool calls' arguments."""
    b = call.begin
    findings: list[pii.Finding] = []
    if call.parser is not None and e.body:
        feed(call, e.body)
    if call.parser is not None:
        rinfo = call.parser.finish()
        if call.scanner is not None:
            findings = call.scanner.findings("$.response.text")
    elif not call.streamed and e.body is not None and e.error is None:
        body = decode_body(e.body, e.encoding)
        if body is None:
            rinfo = ResponseInfo(parse_error="undecodable response body")
        else:
            rinfo = parse_response(call.provider, b.endpoint, body, e.content_type)
        if pii_scan and rinfo.text:
            findings = pii.scan_segments([("$.response.text", rinfo.text)])
    else:
        rinfo = ResponseInfo()
    if pii_scan and rinfo.tool_calls:
        findings += pii.scan_segments(
            (f"$.response.tool_calls[{i}].arguments", tc.arguments)
            for i, tc in enumerate(rinfo.tool_calls)
        )
    if rinfo.parse_error:
        metrics.child(metrics.PARSE_ERRORS, call.provider.name, "response").inc()
    return rinfo, findings


def billed_cost(provider: str, model: str | None, usage: Usage, status: int | None) -> float | None:
    """The call's cost; None when it is not billed or its model has no known price."""
    # Failed calls are not billed; an estimate is only priced for a call that succeeded.
    billable = usage.source == "reported" or (
        usage.source == "estimated" and status is not None and status < 400
    )
    return cost_usd(provider, model, usage) if billable else None


def settlement(request_id: str, usage: Usage, status: int | None, cost: float | None) -> Settle:
    """What the call really spent, for its budget reservation."""
    unknown = usage.total_tokens is None and status is not None and status < 400
    # A call that succeeded and reported nothing keeps what it reserved (a bound).
    return Settle(request_id, UNKNOWN_USAGE if unknown else usage.total_tokens or 0, cost)


def response_tag(
    policies: PolicyStore,
    call: OpenCall,
    findings: list[pii.Finding],
    usage: Usage,
    cost: float | None,
) -> str:
    """The compliance tag after response-phase policies; their decisions join the call's."""
    tag = call.compliance_tag
    if len(policies.current):
        b = call.begin
        d = policies.evaluate(
            policy_context(
                agent_id=b.agent_id,
                agent_name=b.agent_name,
                info=call.info,
                provider=call.provider.name,
                endpoint=b.endpoint,
                direction="response",
                findings=findings,
                tokens=usage.total_tokens,
                cost=cost,
                tool_name=b.tool_name,
                risk_level=(b.risk or {}).get("risk_level"),
            )
        )
        if d.tags:
            tag = d.compliance_tag
        note_decision(call.policy_decisions, "response", d)
    return tag


def response_event(
    call: OpenCall,
    e: End,
    *,
    response_id: str,
    rinfo: ResponseInfo,
    usage: Usage,
    model: str | None,
    cost: float | None,
    tag: str,
    findings: list[pii.Finding],
    tool_calls: list[dict[str, Any]],
) -> Event:
    """The response event of the call; it names the request event as its parent."""
    b = call.begin
    end = e.end
    first = e.first_byte or e.response_start
    return Event(
        id=response_id,
        parent_id=b.request_id,
        agent_id=b.agent_id,
        session_id=b.session_id,
        timestamp=ts(end),
        direction="response",
        provider=call.provider.name,
        endpoint=b.endpoint,
        model=model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        usage_source=usage.source,
        cost_usd=cost,
        status_code=e.status_code,
        latency_ms=round((end - b.started) * 1000, 3),
        ttfb_ms=round((first - b.started) * 1000, 3) if first else None,
        compliance_tag=tag,
        pii_detected=bool(findings),
        pii_types=sorted({f.type for f in findings}),
        pii_findings=[msgspec.structs.asdict(f) for f in findings] or None,
        tool_calls=tool_calls or None,
        policy_decisions=call.policy_decisions or None,
        error=e.error or rinfo.error,
        parse_error=rinfo.parse_error,
        request_bytes=b.request_bytes,
        response_bytes=e.response_bytes,
        host=b.host,
        method=b.method,
    )


def observe(call: OpenCall, e: End) -> None:
    """The call's latency, time to first byte and bytes, into the metrics."""
    b = call.begin
    provider = call.provider.name
    first = e.first_byte or e.response_start
    metrics.child(metrics.UPSTREAM_LATENCY, provider).observe(e.end - b.started)
    if first:
        metrics.child(metrics.TTFB, provider).observe(first - b.started)
    metrics.child(metrics.BYTES, "request").inc(b.request_bytes)
    metrics.child(metrics.BYTES, "response").inc(e.response_bytes)
