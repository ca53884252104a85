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
    conditions: [{{fact: verb_class, eq: delete}}]
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


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            """
  - id: t.unknown_fact
    description: x
    conditions: [{fact: verb_clas, eq: delete}]
    actions: [{add_score: 1}]
""",
            "unknown fact 'verb_clas'",
        ),
        (
            """
  - id: t.bad_op
    description: x
    conditions: [{fact: verb_class, approx: delete}]
    actions: [{add_score: 1}]
""",
            "bad operator 'approx'",
        ),
        (
            """
  - id: t.op_kind
    description: x
    conditions: [{fact: verb_class, gte: 3}]
    actions: [{add_score: 1}]
""",
            "bad operator 'gte' for str fact 'verb_class'",
        ),
        (
            """
  - id: t.bad_action
    description: x
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{set_score: 1}]
""",
            "unknown action 'set_score'",
        ),
        (
            """
  - id: t.bad_severity
    description: x
    refs: ["SOC2:CC6.1"]
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{add_violation: severe}]
""",
            "add_violation needs a severity",
        ),
        (
            """
  - id: t.bad_ref
    description: x
    refs: ["NIST:AC-2"]
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{add_violation: high}]
""",
            "bad ref 'NIST:AC-2'",
        ),
        (
            """
  - id: t.no_refs
    description: x
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{add_violation: high}]
""",
            "add_violation needs at least one ref",
        ),
        (
            """
  - id: t.neg_flag
    description: x
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{assert_fact: gone}]
  - id: t.neg_flag_user
    description: x
    conditions: [{fact: gone, eq: false}]
    actions: [{add_score: 1}]
""",
            "flag 'gone' may only be tested with eq: true",
        ),
        (
            """
  - id: t.base_overwrite
    description: x
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{assert_fact: verb_class}]
""",
            "cannot overwrite base fact 'verb_class'",
        ),
        (
            """
  - id: t.bad_regex
    description: x
    conditions: [{fact: scope, regex: "("}]
    actions: [{add_score: 1}]
""",
            "bad regex",
        ),
        (
            """
  - id: t.two_ops
    description: x
    conditions: [{fact: sensitivity, gte: 1, lte: 3}]
    actions: [{add_score: 1}]
""",
            "exactly one operator",
        ),
        (
            """
  - id: t.extra_key
    description: x
    severity: high
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{add_score: 1}]
""",
            "unknown keys ['severity']",
        ),
        (
            """
  - id: t.score_range
    description: x
    conditions: [{fact: verb_class, eq: delete}]
    actions: [{add_score: 500}]
""",
            "add_score needs a number in -100..100",
        ),
        (
            """
  - id: t.no_conditions
    description: x
    conditions: []
    actions: [{add_score: 1}]
""",
            "'conditions' must be a non-empty list",
        ),
    ],
    ids=lambda v: None if v.startswith("\n") else v,
)
def test_malformed_rule_names_file_rule_and_problem(
    tmp_path: Path, body: str, problem: str
) -> None:
    path = write_rules(tmp_path, "broken.yaml", body)
    with pytest.raises(RuleError) as info:
        load_rules([path])
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert info.value.rule_id is not None and info.value.rule_id in message


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    first = write_rules(tmp_path, "a.yaml", GOOD_RULE.format(id="t.same"))
    second = write_rules(tmp_path, "b.yaml", GOOD_RULE.format(id="t.same"))
    with pytest.raises(RuleError) as info:
        load_rules([first, second])
    assert info.value.rule_id == "t.same"
    assert str(second) in str(info.value)
    assert f"duplicate rule id (first defined in {first})" in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: {not: a list}\n", "top level must be a mapping with a 'rules' list"),
        ("rules: [\n", "cannot read rules"),
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
    conditions: [{fact: flag_b, eq: true}]
    actions: [{add_score: 30}, {add_violation: medium}]
  - id: t.b
    description: b
    conditions: [{fact: flag_a, eq: true}]
    actions: [{assert_fact: flag_b}]
  - id: t.a
    description: a
    conditions: [{fact: verb_class, eq: delete}]
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
