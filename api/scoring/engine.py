"""The scoring engine: facts → intrinsic risk → forward-chaining rules → score, level, confidence.

Score = clamp(1..100, intrinsic + Σ add_score of fired rules), then held at least at the floor of
the most severe violation (bands.py). Intrinsic risk is
`min(100, verb_base x data_weight x target_scope x mcp_trust)` (tables in facts.py).

Confidence starts at 1.0 and drops for each thing the engine had to guess: an unknown verb,
unclassified fields, no target sensitivity, no MCP verification status, no history, an action with
no context at all, rules pulling in opposite directions, a score at a band edge.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Any

from api.scoring import llm_fallback
from api.scoring.bands import (
    SEVERITY_FLOOR,
    clamp_score,
    distance_to_boundary,
    risk_level_for,
)
from api.scoring.facts import SCOPE_FACTOR, Facts, extract_facts, mcp_trust
from api.scoring.fields import FIELDS_FILE, FieldClassifier, default_classifier
from api.scoring.models import (
    ActionEvent,
    HistoryFacts,
    HistoryQuery,
    ScoreComponent,
    ScoreResult,
    Violation,
)
from api.scoring.provenance import CUES_FILE, Conversation
from api.scoring.rules import RULES_DIR, Rule, RuleSet, load_rules_dir
from api.scoring.verbs import VERB_BASE

SCORER_VERSION = "govrix-scoring/1.0.0"
MAX_ITERATIONS = 50


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:8]


class Engine:
    """A compiled rule set plus the field classifier; immutable and safe to share across threads."""

    def __init__(
        self,
        ruleset: RuleSet,
        classifier: FieldClassifier,
        version: str,
        *,
        internal_domains: tuple[str, ...] = (),
    ) -> None:
        self.ruleset = ruleset
        self.classifier = classifier
        self.version = version
        #: Domains whose addresses and hosts are internal destinations (GOVRIX_INTERNAL_DOMAINS).
        self.internal_domains = internal_domains
        # Counterparty digests are only compared within one engine's life, never stored.
        self._salt = os.urandom(16)
        self._flag_defaults = dict.fromkeys(sorted(ruleset.flags), False)

    @classmethod
    def load(cls, rules_dir: Path | None = None, *, internal_domains: Iterable[str] = ()) -> Engine:
        """Load and compile every rule file of `rules_dir` (default: the shipped rules)."""
        directory = rules_dir or RULES_DIR
        ruleset = load_rules_dir(directory)
        digest = _digest([*(Path(f) for f in ruleset.files), FIELDS_FILE, CUES_FILE])
        return cls(
            ruleset,
            default_classifier(),
            f"{SCORER_VERSION}+rules.{digest}",
            internal_domains=tuple(d.lower() for d in internal_domains),
        )

    # --- history --------------------------------------------------------------------------

    @staticmethod
    def facts_for_history(event: ActionEvent) -> HistoryQuery:
        """The keys to look up in the database to fill `HistoryFacts` for this event."""
        mcp = event.mcp_context
        target = event.target
        resource = None
        if target and target.resource_id:
            resource = f"{target.resource_type or 'resource'}:{target.resource_id}"
        return HistoryQuery(
            agent_id=event.agent.agent_id if event.agent else None,
            server_key=(mcp.server_id or mcp.server_name) if mcp else None,
            resource_key=resource,
        )

    @staticmethod
    def action_row(customer_id: str, event: ActionEvent, event_json: str) -> tuple[Any, ...]:
        """The ``actions`` row of an event, in that table's column order (customer_id, event_id,
        agent_id, session_id, action, server_key, resource_key, timestamp, event); the scoring
        API and the proxy's inline scores both store it. A naive timestamp is taken as UTC."""
        q = Engine.facts_for_history(event)
        ts = event.timestamp
        if ts is not None and ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return (
            customer_id,
            event.event_id,
            q.agent_id,
            event.session.session_id if event.session else None,
            event.action,
            q.server_key,
            q.resource_key,
            ts,
            event_json,
        )

    # --- scoring --------------------------------------------------------------------------

    def extract_facts(
        self,
        event: ActionEvent,
        history: HistoryFacts | None = None,
        conversation: Conversation | None = None,
    ) -> Facts:
        """The base facts of an event (for debugging and the LLM prompt)."""
        return extract_facts(
            event,
            history,
            self.classifier,
            internal_domains=self.internal_domains,
            salt=self._salt,
            conversation=conversation,
        )

    @staticmethod
    def counterparties(facts: Facts) -> list[str]:
        """The salted digests of an action's destinations, for `HistoryFacts.known_counterparties`
        of the agent's later actions (what the proxy remembers instead of the addresses)."""
        return [v.digest for v in facts.get("_values", ()) if v.digest]

    def score_with_facts(
        self,
        event: ActionEvent,
        history: HistoryFacts | None = None,
        conversation: Conversation | None = None,
    ) -> tuple[ScoreResult, Facts]:
        """`score`, plus the facts it was computed from (for callers that keep history);
        `conversation` is what produced the call (provenance.py)."""
        return self._score(event, history, conversation)

    def _chain(self, facts: Facts) -> list[Rule]:
        """Fire rules to a fixed point (each rule at most once) or MAX_ITERATIONS waves.

        Wave 1 is every rule on base facts that holds. A derived rule joins the next wave when
        the last flag it needs is asserted and its base-fact conditions hold. Rules are
        monotonic (flags only become true), so this reaches the same fixed point as re-testing
        every rule each pass, without the re-testing.
        """
        ruleset = self.ruleset
        facts.update(self._flag_defaults)
        waiting = list(ruleset.flag_counts)
        derived = ruleset.derived_rules
        dependents = ruleset.dependents
        fired: list[Rule] = []
        wave = [r for r in ruleset.base_rules if r.test(facts)]
        iterations = 0
        while wave and iterations < MAX_ITERATIONS:
            iterations += 1
            next_wave: list[Rule] = []
            for rule in wave:
                fired.append(rule)
                for name in rule.asserts:
                    if facts[name]:
                        continue
                    facts[name] = True
                    for i in dependents.get(name, ()):
                        waiting[i] -= 1
                        if waiting[i] == 0 and derived[i].test(facts):
                            next_wave.append(derived[i])
            wave = next_wave
        return fired

    def score(self, event: ActionEvent, history: HistoryFacts | None = None) -> ScoreResult:
        """Score one action with the rules only. Pure and deterministic."""
        return self._score(event, history)[0]

    def _score(
        self,
        event: ActionEvent,
        history: HistoryFacts | None,
        conversation: Conversation | None = None,
    ) -> tuple[ScoreResult, Facts]:
        facts = self.extract_facts(event, history, conversation)
        verb_base = VERB_BASE[facts["verb_class"]]
        scope = (
            SCOPE_FACTOR.get(facts["sensitivity"], 1.0) if facts["sensitivity"] is not None else 1.0
        )
        trust = mcp_trust(event)
        intrinsic = min(100.0, verb_base * facts["data_weight"] * scope * trust)
        components = [
            ScoreComponent(
                source="intrinsic",
                name="intrinsic",
                value=round(intrinsic, 2),
                detail=(
                    f"verb {facts['verb_word']!r} ({facts['verb_class']}) base {verb_base:g} x "
                    f"data weight {facts['data_weight']:g} x target scope {scope:g} x "
                    f"MCP trust {trust:g}"
                ),
            )
        ]

        fired = self._chain(facts)
        violations: list[Violation] = []
        refs: list[str] = []
        mitigations: list[str] = []
        raw = intrinsic
        floor, floor_rule = 1, ""
        for rule in fired:
            raw += rule.score
            components.append(
                ScoreComponent(
                    source="rule", name=rule.id, value=rule.score, detail=rule.description
                )
            )
            for m in rule.mitigations:
                if m not in mitigations:
                    mitigations.append(m)
            if rule.violation is None:
                continue
            if SEVERITY_FLOOR[rule.violation] > floor:
                floor, floor_rule = SEVERITY_FLOOR[rule.violation], rule.id
            for ref in rule.refs:
                violations.append(
                    Violation(
                        rule_id=rule.id,
                        framework=ref.split(":", 1)[0],
                        ref=ref,
                        severity=rule.violation,
                        explanation=rule.explanation,
                    )
                )
                if ref not in refs:
                    refs.append(ref)
        score = clamp_score(raw)
        if score < floor:
            components.append(
                ScoreComponent(
                    source="rule",
                    name="severity_floor",
                    value=float(floor - score),
                    detail=f"held at {floor} by the severity of {floor_rule}",
                )
            )
            score = floor
        level = risk_level_for(score)
        confidence, doubts = self._confidence(facts, fired, score)
        result = ScoreResult(
            event_id=event.event_id,
            score=score,
            risk_level=level,
            confidence=confidence,
            reasoning=self._reasoning(score, level, components, violations, confidence, doubts),
            violations=violations,
            compliance_refs=refs,
            mitigations=mitigations,
            score_components=components,
            scoring_source="rules",
            scorer_version=self.version,
        )
        return result, facts

    @staticmethod
    def _confidence(facts: Facts, fired: list[Rule], score: int) -> tuple[float, list[str]]:
        doubts: list[tuple[float, str]] = []
        if facts["verb_class"] == "unknown":
            doubts.append((0.25, f"unknown verb {facts['verb_word']!r}"))
        if facts["unclassified_field_count"]:
            n = facts["unclassified_field_count"]
            doubts.append((min(0.15, 0.05 * n), f"{n} unclassified field(s)"))
        if facts["sensitivity"] is None:
            doubts.append((0.1, "no target sensitivity"))
        if facts["mcp_present"] and facts["mcp_verified"] is None:
            doubts.append((0.05, "MCP server verification unknown"))
        if not facts["history_known"]:
            doubts.append((0.05, "no agent history"))
        if not (facts["field_count"] or facts["mcp_present"] or facts["prior_actions"]):
            doubts.append((0.1, "no data fields, MCP context or preceding actions"))
        if any(r.score > 0 for r in fired) and any(r.score < 0 for r in fired):
            doubts.append((0.1, "rules disagree"))
        if distance_to_boundary(score) <= 2:
            doubts.append((0.05, "score at a level boundary"))
        confidence = max(0.05, 1.0 - sum(d for d, _ in doubts))
        return round(confidence, 2), [why for _, why in doubts]

    @staticmethod
    def _reasoning(
        score: int,
        level: str,
        components: list[ScoreComponent],
        violations: list[Violation],
        confidence: float,
        doubts: list[str],
    ) -> str:
        intrinsic = components[0]
        top = sorted((c for c in components[1:] if c.value), key=lambda c: (-abs(c.value), c.name))[
            :3
        ]
        parts = [
            f"Score {score} ({level}).",
            f"Intrinsic risk {intrinsic.value:g} = {intrinsic.detail}.",
        ]
        if top:
            parts.append(
                "Top contributions: "
                + "; ".join(f"{c.name} {c.value:+g} ({c.detail})" for c in top)
                + "."
            )
        else:
            parts.append("No rule changed the score.")
        if violations:
            rules = sorted({v.rule_id for v in violations})
            parts.append(f"{len(rules)} rule(s) found violations: {', '.join(rules)}.")
        parts.append(
            f"Confidence {confidence:.2f}" + (f" ({', '.join(doubts)})." if doubts else ".")
        )
        return " ".join(parts)

    # --- LLM fallback ---------------------------------------------------------------------

    def _llm_payload(self, result: ScoreResult, facts: Facts) -> dict[str, Any]:
        """Facts for the LLM: classes and flags only, never parameter values or resource ids."""
        return {
            "action": facts["action"],
            "verb_class": facts["verb_class"],
            "data_classes": sorted(facts["data_classes"]),
            "sensitivity": facts["sensitivity"],
            "mcp": {
                "present": facts["mcp_present"],
                "verified": facts["mcp_verified"],
                "transport": facts["mcp_transport"],
            },
            "egress": facts["egress"],
            "external_destination": facts["external_destination"],
            "destination": facts["destination"],
            "destination_kinds": sorted(facts["destinations"]),
            "pii_types": sorted(facts["pii_types"]),
            "amount_at_least_1000": (facts["amount"] or 0) >= 1000,
            "deletion_scope": facts["deletion_scope"],
            "provenance": facts["provenance"],
            "destination_provenance": facts["destination_provenance"],
            "instruction_in_tool_result": facts["instruction_in_tool_result"],
            "injected_value_count": facts["injected_value_count"],
            "injected_destination": facts["injected_destination"],
            "exfiltration": facts["exfiltration"],
            "bulk": facts["bulk"],
            "production": facts["is_production"],
            "prior_actions": facts["prior_actions"][-10:],
            "history": {
                "first_use_of_server": facts["first_use_of_server"],
                "first_use_of_resource": facts["first_use_of_resource"],
                "rate_vs_baseline": facts["rate_vs_baseline"],
            },
            "rule_score": result.score,
            "rule_risk_level": result.risk_level,
            "rule_confidence": result.confidence,
            "violations": sorted({v.ref for v in result.violations}),
            "rules_fired": [c.name for c in result.score_components if c.source == "rule"],
        }

    async def score_with_fallback(
        self,
        event: ActionEvent,
        history: HistoryFacts | None = None,
        llm: llm_fallback.LLMConfig | None = None,
    ) -> ScoreResult:
        """Score with the rules; below the confidence threshold, ask the LLM if enabled."""
        result, facts = self._score(event, history)
        if llm is None or not llm_fallback.should_consult(result, llm):
            return result
        try:
            verdict = await llm_fallback.consult_async(llm, self._llm_payload(result, facts))
        except llm_fallback.LLMFallbackError as exc:
            return llm_fallback.mark_failed(result, str(exc))
        return llm_fallback.merge_verdict(result, verdict)
