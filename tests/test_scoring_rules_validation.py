"""Every shipped rule file validates; malformed files fail at load with a clear error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from api.scoring import Engine, RuleError
from api.scoring.facts import BASE_FACTS
from api.scoring.rules import FRAMEWORKS, RULES_DIR, load_rules, load_rules_dir

GOOD_RULE = """
  - id: {id}
    description: test rule
    refs: ["GDPR:Art_32"]
    conditions: [{{field: verb_class, op: eq, value: delete}}]
    actions: [{{add_score: 10}}, {{add_violation: high}}]
"""


def write_rules(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("rules:\n" + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(RULES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_each_shipped_file_validates_alone_or_with_core(path: Path) -> None:
    # Framework files build on flags asserted in the core file, so validate them with it.
    core = RULES_DIR / "00_core.yaml"
    ruleset = load_rules([core] if path == core else [core, path])
    assert ruleset.rules


def test_shipped_rule_set_size_and_coverage() -> None:
    ruleset = load_rules_dir()
    assert len(ruleset.rules) >= 90
    assert len({r.id for r in ruleset.rules}) == len(ruleset.rules)
    frameworks = Counter(fw for r in ruleset.rules for fw in r.frameworks)
    assert set(frameworks) == FRAMEWORKS
    assert all(n >= 5 for n in frameworks.values()), frameworks
    for rule in ruleset.rules:
        if rule.violation is not None:
            assert rule.refs and rule.explanation


def test_rules_split_by_dependency() -> None:
    ruleset = load_rules_dir()
    assert ruleset.derived_rules, "framework rules build on asserted flags"
    for rule in ruleset.base_rules:
        assert not rule.flag_conditions
    assert ruleset.flags.isdisjoint(BASE_FACTS)


def test_engine_loads_custom_dir(tmp_path: Path) -> None:
    write_rules(tmp_path, "a.yaml", GOOD_RULE.format(id="t.delete"))
    engine = Engine.load(tmp_path)
    assert [r.id for r in engine.ruleset.rules] == ["t.delete"]
    assert engine.version != Engine.load().version


HEAD = "  - id: t.x\n    description: x\n"  # with "rules:" on line 1, the rule starts on line 2

# (id, rule body after HEAD, line at fault, text the message must contain)
MALFORMED: list[tuple[str, str, int, str]] = [
    (
        "unknown-field",
        "    conditions: [{field: verb_clas, op: eq, value: delete}]\n"
        "    actions: [{add_score: 1}]\n",
        4,
        "condition #1: unknown field 'verb_clas' (did you mean 'verb_class'",
    ),
    (
        "unknown-operator",
        "    conditions:\n      - {field: verb_class, op: eq, value: delete}\n"
        "      - field: verb_class\n        op: approx\n        value: delete\n"
        "    actions: [{add_score: 1}]\n",
        7,
        "condition #2: unknown operator 'approx'",
    ),
    (
        "operator-kind",
        "    conditions: [{field: verb_class, op: gte, value: 3}]\n    actions: [{add_score: 1}]\n",
        4,
        "operator 'gte' does not apply to verb_class (a string)",
    ),
    (
        "value-type",
        "    conditions:\n      - field: sensitivity\n        op: gte\n        value: high\n"
        "    actions: [{add_score: 1}]\n",
        7,
        "sensitivity gte needs a number, got string 'high'",
    ),
    (
        "old-condition-shape",
        "    conditions: [{fact: verb_class, eq: delete}]\n    actions: [{add_score: 1}]\n",
        4,
        "write conditions as {field: NAME, op: OP, value: VALUE}",
    ),
    (
        "missing-value",
        "    conditions: [{field: verb_class, op: eq}]\n    actions: [{add_score: 1}]\n",
        4,
        "missing required field `value`",
    ),
    (
        "two-operators",
        "    conditions: [{field: sensitivity, op: gte, value: 1, lte: 3}]\n"
        "    actions: [{add_score: 1}]\n",
        4,
        "unknown key `lte`",
    ),
    (
        "bad-regex",
        '    conditions: [{field: scope, op: regex, value: "("}]\n    actions: [{add_score: 1}]\n',
        4,
        "bad regex",
    ),
    (
        "regex-backreference-not-re2",
        "    conditions:\n      - {field: scope, op: eq, value: x}\n"
        '      - {field: scope, op: regex, value: "(a)\\\\1"}\n    actions: [{add_score: 1}]\n',
        6,
        "bad regex",
    ),
    (
        "flag-not-eq-true",
        "    conditions: [{field: verb_class, op: eq, value: delete}]\n"
        "    actions: [{assert_fact: gone}]\n"
        "  - id: t.neg_flag_user\n    description: x\n"
        "    conditions: [{field: gone, op: eq, value: false}]\n    actions: [{add_score: 1}]\n",
        8,
        "flag 'gone' may only be tested with eq: true",
    ),
    (
        "unknown-action",
        "    conditions: [{field: verb_class, op: eq, value: delete}]\n"
        "    actions: [{add_score: 1}, {set_score: 1}]\n",
        5,
        "unknown action 'set_score'",
    ),
    (
        "bad-severity",
        '    refs: ["SOC2:CC6.1"]\n    conditions: [{field: verb_class, op: eq, value: delete}]\n'
        "    actions:\n      - add_violation: severe\n",
        7,
        "add_violation needs a severity",
    ),
    (
        "bad-ref",
        '    refs: ["GDPR:Art_32", "NIST:AC-2"]\n'
        "    conditions: [{field: verb_class, op: eq, value: delete}]\n"
        "    actions: [{add_violation: high}]\n",
        4,
        "bad ref 'NIST:AC-2'",
    ),
    (
        "no-refs",
        "    conditions: [{field: verb_class, op: eq, value: delete}]\n"
        "    actions: [{add_violation: high}]\n",
        5,
        "add_violation needs at least one ref",
    ),
    (
        "base-overwrite",
        "    conditions: [{field: verb_class, op: eq, value: delete}]\n"
        "    actions: [{assert_fact: verb_class}]\n",
        5,
        "cannot overwrite base fact 'verb_class'",
    ),
    (
        "extra-key",
        "    severity: high\n    conditions: [{field: verb_class, op: eq, value: delete}]\n"
        "    actions: [{add_score: 1}]\n",
        4,
        "unknown keys ['severity']",
    ),
    (
        "score-range",
        "    conditions: [{field: verb_class, op: eq, value: delete}]\n"
        "    actions: [{add_score: 500}]\n",
        5,
        "add_score needs a number in -100..100",
    ),
    (
        "no-conditions",
        "    conditions: []\n    actions: [{add_score: 1}]\n",
        4,
        "'conditions' must be a non-empty list",
    ),
]


@pytest.mark.parametrize(
    ("body", "line", "problem"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_rule_names_file_line_rule_and_problem(
    tmp_path: Path, body: str, line: int, problem: str
) -> None:
    path = write_rules(tmp_path, "broken.yaml", HEAD + body)
    with pytest.raises(RuleError) as info:
        load_rules([path])
    err = info.value
    assert err.path == str(path)
    assert err.line == line, str(err)
    assert err.rule_id is not None
    assert str(err).startswith(f"{path}:{line}: rule {err.rule_id!r}: "), str(err)
    assert problem in err.message, str(err)


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    first = write_rules(tmp_path, "a.yaml", GOOD_RULE.format(id="t.same"))
    second = write_rules(tmp_path, "b.yaml", GOOD_RULE.format(id="t.same"))
    with pytest.raises(RuleError) as info:
        load_rules([first, second])
    assert info.value.rule_id == "t.same"
    assert str(second) in str(info.value)
    assert info.value.line == 3
    assert f"duplicate rule id (first defined in {first}:3)" in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: {not: a list}\n", "top level must be a mapping with a 'rules' list"),
        ("rules: [\n", "invalid YAML"),
        ("rules:\n  - description: no id\n", "needs an id"),
    ],
)
def test_malformed_file_structure(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert str(path) in str(info.value) and problem in str(info.value)


def test_empty_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"no \*\.yaml rule files"):
        load_rules_dir(tmp_path)


def test_chaining_reaches_fixed_point(tmp_path: Path) -> None:
    # c depends on b depends on a, written in reverse order: needs several passes.
    body = """
  - id: t.c
    description: c
    refs: ["SOC2:CC7.2"]
    conditions: [{field: flag_b, op: eq, value: true}]
    actions: [{add_score: 30}, {add_violation: medium}]
  - id: t.b
    description: b
    conditions: [{field: flag_a, op: eq, value: true}]
    actions: [{assert_fact: flag_b}]
  - id: t.a
    description: a
    conditions: [{field: verb_class, op: eq, value: delete}]
    actions: [{assert_fact: flag_a}]
"""
    write_rules(tmp_path, "chain.yaml", body)
    from api.scoring import convert_action_event

    engine = Engine.load(tmp_path)
    fired = engine.score(convert_action_event({"event_id": "e", "action": "fs:x:file.delete"}))
    assert [c.name for c in fired.score_components[1:]] == ["t.a", "t.b", "t.c"]
    assert fired.compliance_refs == ["SOC2:CC7.2"]
    quiet = engine.score(convert_action_event({"event_id": "e", "action": "fs:x:file.read"}))
    assert len(quiet.score_components) == 1 and quiet.violations == []
