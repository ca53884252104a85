"""The scoring engine against the labelled corpus, plus unit tests of its parts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from api.scoring import (
    SCORER_VERSION,
    Engine,
    HistoryFacts,
    ScoreResult,
    ValidationError,
    convert_action_event,
    decode_action_event,
)
from api.scoring.bands import risk_level_for
from api.scoring.fields import default_classifier

CORPUS = Path(__file__).parent / "data" / "scoring_scenarios.yaml"
LEVELS = ("none", "low", "medium", "high", "critical")


class Scenario(msgspec.Struct, kw_only=True):
    name: str
    level: str
    event: dict[str, Any]
    violations: list[str] = msgspec.field(default_factory=list)
    history: HistoryFacts | None = None


def load_scenarios() -> list[Scenario]:
    raw = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))["scenarios"]
    return msgspec.convert(raw, list[Scenario])


SCENARIOS = load_scenarios()


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load()


def score_scenario(engine: Engine, s: Scenario) -> ScoreResult:
    event = convert_action_event({"event_id": s.name, **s.event})
    return engine.score(event, s.history)


def confusion_table(pairs: Sequence[tuple[str, str]]) -> str:
    counts = Counter(pairs)
    lines = ["expected \\ got " + "".join(f"{lv:>10}" for lv in LEVELS)]
    for exp in LEVELS:
        lines.append(f"{exp:<15}" + "".join(f"{counts[(exp, got)]:>10}" for got in LEVELS))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def corpus_results(engine: Engine) -> list[tuple[Scenario, ScoreResult]]:
    return [(s, score_scenario(engine, s)) for s in SCENARIOS]


def test_corpus_is_large_and_balanced() -> None:
    assert len(SCENARIOS) >= 60
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    assert {s.level for s in SCENARIOS} == set(LEVELS)


def test_corpus_level_accuracy(corpus_results: list[tuple[Scenario, ScoreResult]]) -> None:
    pairs = [(s.level, r.risk_level) for s, r in corpus_results]
    misses = [
        f"  {s.name}: expected {s.level}, got {r.risk_level} ({r.score})"
        for s, r in corpus_results
        if s.level != r.risk_level
    ]
    accuracy = sum(e == g for e, g in pairs) / len(pairs)
    report = (
        f"\nscoring corpus: {accuracy:.1%} of {len(pairs)} match\n"
        + confusion_table(pairs)
        + ("\nmismatches:\n" + "\n".join(misses) if misses else "")
    )
    print(report)  # pytest -s shows it; the assert message shows it on failure
    assert accuracy >= 0.90, report


def test_corpus_never_rates_critical_low(
    corpus_results: list[tuple[Scenario, ScoreResult]],
) -> None:
    bad = [
        (s.name, r.risk_level)
        for s, r in corpus_results
        if s.level == "critical" and r.risk_level in ("none", "low")
    ]
    assert bad == []


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.violations], ids=lambda s: s.name)
def test_corpus_expected_violations(engine: Engine, scenario: Scenario) -> None:
    result = score_scenario(engine, scenario)
    found = {v.ref for v in result.violations} | {v.rule_id for v in result.violations}
    missing = [v for v in scenario.violations if v not in found]
    assert missing == [], f"{scenario.name}: missing {missing}; got {sorted(found)}"


def test_benign_scenarios_report_no_violations(
    corpus_results: list[tuple[Scenario, ScoreResult]],
) -> None:
    noisy = [
        (s.name, [v.ref for v in r.violations])
        for s, r in corpus_results
        if s.level == "none" and r.violations
    ]
    assert noisy == []


# --- result shape and determinism ------------------------------------------------------------


def test_result_is_explained_and_consistent(
    corpus_results: list[tuple[Scenario, ScoreResult]],
) -> None:
    for s, r in corpus_results:
        assert 1 <= r.score <= 100
        assert r.risk_level == risk_level_for(r.score)
        assert 0.0 < r.confidence <= 1.0
        assert r.scoring_source == "rules"
        assert r.scorer_version.startswith(SCORER_VERSION)
        assert r.event_id == s.name
        assert r.score_components[0].source == "intrinsic"
        assert f"Score {r.score} ({r.risk_level})" in r.reasoning
        assert set(r.compliance_refs) == {v.ref for v in r.violations}
        for v in r.violations:
            assert v.ref.startswith(v.framework + ":")


def test_scoring_is_deterministic(engine: Engine) -> None:
    for s in SCENARIOS[:20]:
        a = msgspec.json.encode(score_scenario(engine, s))
        b = msgspec.json.encode(score_scenario(Engine.load(), s))
        assert a == b


def test_reasoning_names_top_contribution(engine: Engine) -> None:
    s = next(x for x in SCENARIOS if x.name == "secret_read_then_pastebin")
    r = score_scenario(engine, s)
    assert "owasp_llm.secret_read_then_outbound" in r.reasoning
    assert r.risk_level == "critical"
    assert r.mitigations


def test_preceding_actions_drive_the_chain(engine: Engine) -> None:
    send = {"event_id": "e1", "action": "http:webhook:payload.send"}
    alone = engine.score(convert_action_event(send))
    chained = engine.score(
        convert_action_event({**send, "preceding_actions": ["db:customers:rows.read"]})
    )
    via_history = engine.score(
        convert_action_event(send), HistoryFacts(recent_actions=["db:customers:rows.read"])
    )
    assert alone.risk_level in ("none", "low", "medium")
    assert chained.risk_level == via_history.risk_level == "critical"
    assert any(c.name == "owasp_llm.sensitive_read_then_outbound" for c in chained.score_components)


def test_unverified_server_raises_score(engine: Engine) -> None:
    base = {
        "event_id": "e",
        "action": "mcp:docs:page.read",
        "mcp_context": {"server_name": "docs", "transport": "stdio", "is_verified": True},
    }
    verified = engine.score(convert_action_event(base))
    unverified = engine.score(
        convert_action_event(
            {
                **base,
                "mcp_context": {"server_name": "docs", "transport": "sse", "is_verified": False},
            }
        )
    )
    assert unverified.score > verified.score
    assert "OWASP_LLM:LLM03" in unverified.compliance_refs


def test_confidence_drops_on_thin_facts(engine: Engine) -> None:
    rich = next(x for x in SCENARIOS if x.name == "repo_read_verified")
    thin = engine.score(convert_action_event({"event_id": "t", "action": "x:y:frobnicate"}))
    assert score_scenario(engine, rich).confidence >= 0.8
    assert thin.confidence < 0.8
    assert "unknown verb" in thin.reasoning


def test_explicit_classification_wins(engine: Engine) -> None:
    event = {"event_id": "e", "action": "db:t:row.read"}
    named = engine.score(convert_action_event({**event, "data_fields_accessed": ["password"]}))
    relabelled = engine.score(
        convert_action_event(
            {**event, "data_fields_accessed": [{"field": "password", "classification": "public"}]}
        )
    )
    assert named.score_components[0].value > relabelled.score_components[0].value


def test_facts_for_history(engine: Engine) -> None:
    event = convert_action_event(
        {
            "event_id": "e",
            "action": "mcp:github:pr.create",
            "agent": {"agent_id": "bot"},
            "target": {"resource_type": "repository", "resource_id": "org/r"},
            "mcp_context": {"server_name": "github-mcp", "server_id": "srv-1"},
        }
    )
    q = engine.facts_for_history(event)
    assert (q.agent_id, q.server_key, q.resource_key) == ("bot", "srv-1", "repository:org/r")


# --- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"event_id":"e","action":"mcp:github"}', "action"),
        (b'{"event_id":"e","action":"a::c"}', "action"),
        (
            b'{"event_id":"e","action":"a:b:c","target":{"sensitivity_level":5}}',
            "target.sensitivity_level",
        ),
        (b'{"action":"a:b:c"}', "event_id"),
        (
            b'{"event_id":"e","action":"a:b:c","mcp_context":{"is_verified":"yes"}}',
            "mcp_context.is_verified",
        ),
        (
            b'{"event_id":"e","action":"a:b:c","data_fields_accessed":[{"field":"x","classification":"secret"}]}',
            "data_fields_accessed[0].classification",
        ),
        (b'{"event_id":"e","action":"a:b:c","bogus":1}', "bogus"),
        (b"{not json", ""),
    ],
)
def test_decode_errors_name_the_field(raw: bytes, path: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode_action_event(raw)
    assert info.value.path == path
    assert info.value.message


def test_decode_seed_example_and_batch_item() -> None:
    seed = (
        b'{"event_id":"evt-unique-id","action":"mcp:github:pr.create","timestamp":"2026-02-26T10:00:00Z",'
        b'"data_fields_accessed":[{"field":"source_code","classification":"internal"},"email"],'
        b'"preceding_actions":["mcp:github:repo.read"],"parameters":{"title":"x"}}'
    )
    event = decode_action_event(seed)
    assert event.action == "mcp:github:pr.create"
    assert event.data_fields_accessed[1] == "email"
    minimal = decode_action_event(b'{"event_id":"evt-001","action":"mcp:github:repo.read"}')
    assert minimal.target is None and minimal.preceding_actions == []


# --- field classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("email", "pii"),
        ("user_email", "pii"),
        ("customerEmailAddress", "pii"),
        ("billing_cc_number", "financial"),
        ("api_key_v2", "auth"),
        ("APIKey", "auth"),
        ("x-auth-token", "auth"),
        ("SSN", "pii_sensitive"),
        ("passport-number", "pii_sensitive"),
        ("patient_diagnosis", "health"),
        ("creditCardNumber", "financial"),
        ("token_count", "public"),
        ("maxTokens", "public"),
        ("user.profile.phone", "pii"),
        ("legal_hold_notice", "legal"),
        ("source_code", "internal"),
        ("branch_name", None),
    ],
)
def test_field_classification(name: str, cls: str | None) -> None:
    assert default_classifier().classify(name) == cls


def test_field_table_size_and_weights() -> None:
    table = default_classifier().table
    sensitive = [k for k, v in table.fields.items() if v != "public"]
    assert len(sensitive) >= 51
    assert table.weights["auth"] == 3.5
    assert table.weights["internal"] == 1.3
    assert {table.weights[c] for c in ("pii", "pii_sensitive", "financial", "health", "legal")} == {
        2.5
    }


def test_result_never_echoes_parameter_values(engine: Engine) -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    event = convert_action_event(
        {
            "event_id": "e",
            "action": "mcp:slack:message.send",
            "parameters": {"text": f"key {secret} for jane.doe@example.com"},
        }
    )
    encoded = msgspec.json.encode(engine.score(event))
    assert secret.encode() not in encoded
    assert b"jane.doe@example.com" not in encoded
    assert b"OWASP_LLM:LLM02" in encoded


def test_chaining_stops_after_max_iterations(tmp_path: Path) -> None:
    from api.scoring.engine import MAX_ITERATIONS

    rules = [
        "  - id: t.r0\n    description: start\n"
        "    conditions: [{field: verb_class, op: eq, value: read}]\n    actions: [{assert_fact: f0}]\n"
    ]
    for i in range(1, MAX_ITERATIONS + 10):
        rules.append(
            f"  - id: t.r{i}\n    description: step {i}\n"
            f"    conditions: [{{field: f{i - 1}, op: eq, value: true}}]\n"
            f"    actions: [{{assert_fact: f{i}}}, {{add_score: 1}}]\n"
        )
    (tmp_path / "long.yaml").write_text("rules:\n" + "".join(rules), encoding="utf-8")
    result = Engine.load(tmp_path).score(
        convert_action_event({"event_id": "e", "action": "a:b:read"})
    )
    fired = [c.name for c in result.score_components if c.source == "rule"]
    assert len(fired) == MAX_ITERATIONS
    assert fired[-1] == f"t.r{MAX_ITERATIONS - 1}"
