"""Policy rules on the request: block (403), tag, redact (applied by the pii gate), log.

Rules may test PII findings, so the request's text is scanned here when a policy is active
(once; the findings go on the call and into the request event). A body the rules cannot read
applies ``GOVRIX_UNPARSEABLE``.
"""

from __future__ import annotations

from mitmproxy import http

from addon import pii, refusals
from addon.call import Call
from addon.gates.parse import unreadable
from addon.policy import PolicyStore, note_decision, policy_context
from addon.refusals import Refusal


class PolicyGate:
    name = "policy"

    def __init__(self, policies: PolicyStore, *, pii_scan: bool, unparseable: str) -> None:
        self.policies = policies
        self.pii_scan = pii_scan
        self.unparseable = unparseable

    def active(self) -> bool:
        return len(self.policies.current) > 0

    def __call__(self, call: Call, flow: http.HTTPFlow) -> Refusal | None:
        if not self.active():
            return None
        if (refusal := unreadable(call, self.name, self.unparseable)) is not None:
            return refusal
        info = call.info
        assert info is not None  # the conductor parses whenever a policy is active
        if call.findings is None:
            call.findings = pii.scan_segments(info.text) if self.pii_scan and info.text else []
        decision = self.policies.evaluate(
            policy_context(
                agent_id=call.identity.agent_id,
                agent_name=call.identity.name,
                info=info,
                provider=call.route.provider_name,
                endpoint=call.route.endpoint,
                direction="request",
                findings=call.findings,
                tokens=info.estimated_prompt_tokens,
                cost=None,
                tool_name=call.tool_name,
                risk_level=call.risk.risk_level if call.risk is not None else None,
                provenance=call.risk_facts.provenance if call.risk_facts is not None else None,
                destination=call.risk_facts.destination if call.risk_facts is not None else None,
            )
        )
        call.compliance_tag = decision.compliance_tag
        note_decision(call.policy_decisions, "request", decision)
        if decision.block is not None:
            return refusals.policy_blocked(decision.block.rule, decision.block.message)
        call.redact = decision.redact
        return None
