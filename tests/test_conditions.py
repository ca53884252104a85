"""The one condition language (addon/conditions.py), used from a policy and from a scoring rule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.conditions import (
    ALIASES,
    KIND_OPS,
    OPERATORS,
    ConditionError,
    FieldType,
    check,
    compile_all,
    compile_regex,
)
from addon.policy import PolicyError, parse_policy
from api.scoring.facts import BASE_FACTS
from api.scoring.rules import RuleError, load_rules

# One field of each kind that both vocabularies have: (policy field, scoring fact).
PAIRS: dict[str, tuple[str, str]] = {
    "string": ("agent_name", "scope"),
    "number": ("token_count", "record_count"),
    "boolean": ("pii_detected", "egress"),
    "list": ("pii_types", "data_classes"),
}

_MISSING = object()  # the policy context lacks the field; the scoring fact is None


def policy_answer(kind: str, op: str, value: object, subject: object) -> bool:
    field = PAIRS[kind][0]
    cond = json.dumps({"field": field, "op": op, "value": value})
    policies = parse_policy(f"rules:\n  - name: r\n    when: [{cond}]\n    action: log\n")
    ctx = {} if subject is _MISSING else {field: subject}
    return policies.evaluate(ctx).matched == ["r"]


def scoring_answer(tmp_path: Path, kind: str, op: str, value: object, subject: object) -> bool:
    fact = PAIRS[kind][1]
    cond = json.dumps({"field": fact, "op": op, "value": value})
    path = tmp_path / "r.yaml"
    path.write_text(
        f"rules:\n  - id: t.r\n    description: r\n    conditions: [{cond}]\n"
        "    actions: [{add_score: 1}]\n",
        encoding="utf-8",
    )
    (rule,) = load_rules([path]).rules
    facts = dict.fromkeys(BASE_FACTS)  # the engine's facts hold every base fact
    if subject is not _MISSING:
        facts[fact] = set(subject) if kind == "list" else subject  # type: ignore[call-overload]
    return rule.test(facts)


# (kind, op, value, subject value, expected). Every operator on every kind it applies to.
TABLE: list[tuple[str, str, object, object, bool]] = [
    ("string", "eq", "prod", "prod", True),
    ("string", "eq", "prod", "prod-eu", False),
    ("string", "eq", "prod", _MISSING, False),
    ("string", "neq", "prod", "dev", True),
    ("string", "neq", "prod", "prod", False),
    ("string", "neq", "prod", _MISSING, True),  # negative operators: true when unknown
    ("string", "in", ["a", "b"], "b", True),
    ("string", "in", ["a", "b"], "c", False),
    ("string", "in", ["a", "b"], _MISSING, False),
    ("string", "not_in", ["a", "b"], "c", True),
    ("string", "not_in", ["a", "b"], "a", False),
    ("string", "not_in", ["a", "b"], _MISSING, True),
    ("string", "contains", "card", "billing-cards", True),
    ("string", "contains", "card", "billing", False),
    ("string", "contains", "card", _MISSING, False),
    ("string", "not_contains", "card", "billing", True),
    ("string", "not_contains", "card", "cards", False),
    ("string", "regex", "^intern-", "intern-7", True),
    ("string", "regex", "^intern-", "bob-intern-7", False),
    ("string", "regex", "intern-", "bob-intern-7", True),  # a search, not a full match
    ("string", "regex", "(?i)^INTERN", "intern-7", True),
    ("string", "regex", "^intern-", _MISSING, False),
    ("string", "exists", True, "x", True),
    ("string", "exists", True, _MISSING, False),
    ("string", "exists", False, _MISSING, True),
    ("number", "eq", 100, 100, True),
    ("number", "eq", 100, 100.0, True),
    ("number", "neq", 100, 7, True),
    ("number", "gt", 100, 101, True),
    ("number", "gt", 100, 100, False),
    ("number", "gt", 100, _MISSING, False),
    ("number", "gte", 100, 100, True),
    ("number", "gte", 1.5, 1, False),
    ("number", "lt", 100, 99.5, True),
    ("number", "lt", 100, _MISSING, False),
    ("number", "lte", 100, 100, True),
    ("number", "lte", 100, 101, False),
    ("number", "in", [1, 2], 2, True),
    ("number", "not_in", [1, 2], 3, True),
    ("number", "exists", True, 0, True),
    ("boolean", "eq", True, True, True),
    ("boolean", "eq", False, False, True),
    ("boolean", "eq", False, _MISSING, False),  # unknown is not false
    ("boolean", "neq", True, _MISSING, True),
    ("boolean", "exists", False, _MISSING, True),
    ("list", "contains", "pii", ["pii", "auth"], True),
    ("list", "contains", "pii", ["pii_sensitive"], False),  # an item, not a substring
    ("list", "contains", "pii", [], False),
    ("list", "not_contains", "pii", ["auth"], True),
    ("list", "in", ["pii", "health"], ["health", "auth"], True),  # any item in the list
    ("list", "in", ["pii", "health"], ["auth"], False),
    ("list", "not_in", ["pii", "health"], ["auth"], True),
    ("list", "regex", "^pii", ["auth", "pii_sensitive"], True),  # any item matches
    ("list", "regex", "^pii", ["auth"], False),
    ("list", "eq", ["pii", "auth"], ["auth", "pii"], True),  # the same set
    ("list", "eq", ["pii"], ["pii", "auth"], False),
    ("list", "neq", ["pii"], ["pii", "auth"], True),
    ("list", "exists", True, [], True),
]


def _case_id(case: tuple[str, str, object, object, bool]) -> str:
    kind, op, value, subject, expected = case
    shown = "missing" if subject is _MISSING else json.dumps(subject)
    return f"{kind}-{op}-{json.dumps(value)}-{shown}-{expected}"


def test_table_covers_every_operator_of_every_kind() -> None:
    covered = {(kind, op) for kind, op, *_ in TABLE}
    for kind in PAIRS:
        assert {(kind, op) for op in KIND_OPS[kind]} <= covered, kind
    assert set().union(*KIND_OPS.values()) == set(OPERATORS)


@pytest.mark.parametrize(
    ("kind", "op", "value", "subject", "expected"), TABLE, ids=[_case_id(c) for c in TABLE]
)
def test_policy_and_scoring_rule_give_the_same_answer(
    tmp_path: Path, kind: str, op: str, value: object, subject: object, expected: bool
) -> None:
    assert policy_answer(kind, op, value, subject) is expected
    assert scoring_answer(tmp_path, kind, op, value, subject) is expected


@pytest.mark.parametrize(("alias", "canonical"), sorted(ALIASES.items()))
def test_old_policy_spellings_are_aliases(alias: str, canonical: str) -> None:
    fields = {"n": FieldType("number"), "s": FieldType("string")}
    field = "s" if canonical in ("regex", "eq", "neq") else "n"
    value = "x" if field == "s" else 1
    assert check(field, alias, value, fields).op == canonical


# --------------------------------------------------------------------------------------------
# Errors: one message, at the line of the key at fault, from a policy and from a scoring rule
# --------------------------------------------------------------------------------------------

# (id, condition as block YAML lines, the line offset of the key at fault, message text)
BAD: list[tuple[str, list[str], int, str]] = [
    ("unknown-operator", ["field: {s}", "op: startswith", "value: x"], 1, "unknown operator"),
    ("op-not-for-kind", ["field: {s}", "op: gt", "value: 5"], 1, "operator 'gt' does not apply"),
    ("value-type", ["field: {n}", "op: gte", 'value: "100"'], 2, "needs a number, got string"),
    ("in-empty", ["field: {s}", "op: in", "value: []"], 2, "needs a non-empty list of strings"),
    ("exists-not-bool", ["field: {s}", "op: exists", "value: 1"], 2, "needs true or false"),
    ("bad-regex", ["field: {s}", "op: regex", "value: '(open'"], 2, "bad regex '(open'"),
    ("look-behind", ["field: {s}", "op: regex", "value: '(?<=a)b'"], 2, "RE2 syntax"),
    ("backreference", ["field: {s}", "op: regex", "value: '(a)\\1'"], 2, "RE2 syntax"),
    ("surrogate", ["field: {s}", "op: regex", 'value: "\\ud800"'], 2, "not valid Unicode"),
    ("unknown-key", ["field: {s}", "op: eq", "value: x", "negate: true"], 3, "unknown key"),
]


@pytest.mark.parametrize(("lines", "offset", "text"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_errors_name_the_line_in_both_languages(
    tmp_path: Path, lines: list[str], offset: int, text: str
) -> None:
    def block(field: str, number: str, indent: str) -> str:
        items = [ln.format(s=field, n=number) for ln in lines]
        return f"{indent}- " + f"\n{indent}  ".join(items) + "\n"

    # Line 5 in both files holds `field:`; the key at fault is `offset` lines below.
    policy = "version: 1\nrules:\n  - name: r\n    when:\n" + block(
        "agent_name", "token_count", "      "
    )
    with pytest.raises(PolicyError) as p:
        parse_policy(policy + "    action: log\n", "p.yaml")
    path = tmp_path / "s.yaml"
    path.write_text(
        "rules:\n  - id: t.r\n    description: r\n    conditions:\n"
        + block("scope", "record_count", "      ")
        + "    actions: [{add_score: 1}]\n",
        encoding="utf-8",
    )
    with pytest.raises(RuleError) as s:
        load_rules([path])
    assert (p.value.line, s.value.line) == (5 + offset, 5 + offset), (str(p.value), str(s.value))
    assert str(p.value).startswith(f"p.yaml:{5 + offset}: rule 'r', condition #1: ")
    assert str(s.value).startswith(f"{path}:{5 + offset}: rule 't.r': condition #1: ")
    assert text in p.value.message and text in s.value.message
    # The same checker wrote both: the problem reads the same after the field name.
    tail = p.value.message.split("condition #1: ", 1)[1].replace("agent_name", "F")
    assert tail.replace("token_count", "F") == (
        s.value.message.split("condition #1: ", 1)[1]
        .replace("scope", "F")
        .replace("record_count", "F")
    )


def test_unknown_field_suggests_a_close_name() -> None:
    with pytest.raises(ConditionError, match=r"did you mean 'verb_class'") as info:
        check("verb_clas", "eq", "x", {n: FieldType("string") for n in BASE_FACTS})
    assert info.value.key == "field"


# --------------------------------------------------------------------------------------------
# Properties over adversarial input
# --------------------------------------------------------------------------------------------

STRING = {"s": FieldType("string")}
LIST = {"s": FieldType("list")}
PATTERNS = ["^intern-", "(?i)secret", "a|b|c", "^$", ".", "é+", "(x+x+)+y", r"\d{3}-\d{4}"]

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.one_of(st.text(), st.integers(), st.none()), max_size=5),
    st.sets(st.text(max_size=5), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(), pattern=st.sampled_from(PATTERNS))
def test_regex_condition_never_raises_and_agrees_with_re2(text: str, pattern: str) -> None:
    test = compile_all([check("s", "regex", pattern, STRING)], STRING)
    got = test({"s": text})
    assert got is test({"s": text})  # the memoised answer is the same answer
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        assert got == (re2.search(pattern, text) is not None)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(), min_size=1))
def test_undecodable_bytes_in_a_value_do_not_break_a_regex(text: str) -> None:
    # mitmproxy decodes header bytes with surrogateescape: an agent name may hold "\udcff".
    test = compile_all([check("s", "regex", "x$", STRING)], STRING)
    assert test({"s": text + "\udcffx"}) is True
    assert test({"s": text + "x\udcff"}) is False


@settings(max_examples=300, deadline=None)
@given(subject=anything)
def test_no_operator_raises_on_any_value_and_negations_are_exact(subject: object) -> None:
    for fields, kind in ((STRING, "string"), (LIST, "list")):
        for op in sorted(KIND_OPS[kind]):
            value: object = (
                True if op == "exists" else (["a", "b"] if op in ("in", "not_in") else "a")
            )
            if kind == "list" and op in ("eq", "neq"):
                value = ["a"]
            answer = compile_all([check("s", op, value, fields)], fields)({"s": subject})
            assert isinstance(answer, bool)
            if op.startswith(("neq", "not_")):
                positive = "eq" if op == "neq" else op[4:]
                pos = compile_all([check("s", positive, value, fields)], fields)({"s": subject})
                assert answer is not pos


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(max_size=40))
def test_checking_any_pattern_either_compiles_or_is_a_condition_error(pattern: str) -> None:
    try:
        cond = check("s", "regex", pattern, STRING)
    except ConditionError as e:
        assert e.key == "value" and "bad regex" in e.message
    else:
        compile_all([cond], STRING)({"s": "probe"})


@pytest.mark.parametrize(
    "pattern",
    [r"(a)\1", "(?=a)", "(?!a)", "(?<=a)b", "(?<!a)b", "((a{100}){100}){100}"],
    ids=["backreference", "lookahead", "neg-lookahead", "lookbehind", "neg-lookbehind", "huge"],
)
def test_re2_refuses_backtracking_and_oversized_patterns_at_load(pattern: str) -> None:
    with pytest.raises(ConditionError, match="bad regex"):
        check("s", "regex", pattern, STRING)


def test_nested_quantifiers_match_in_linear_time() -> None:
    """``(x+x+)+y`` backtracks exponentially in Python's re; RE2 does not backtrack."""
    test = compile_all([check("s", "regex", "^(x+x+)+y$", STRING)], STRING)
    start = time.perf_counter()
    assert test({"s": "x" * 100_000}) is False
    assert time.perf_counter() - start < 1.0
    assert compile_regex("^(x+x+)+y$") is compile_regex("^(x+x+)+y$")  # compiled once
