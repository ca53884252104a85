"""Policy engine: operators, actions, malformed files, reload (addon/policy/)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from addon.policy import (
    FIELDS,
    BlockVerdict,
    Decision,
    PolicyContext,
    PolicyError,
    PolicySet,
    PolicyStore,
    load_policy_file,
    parse_policy,
    watch,
)

DATA = Path(__file__).parent / "data" / "policies"


def one_rule(field: str, op: str, value: object, action: str = "log", extra: str = "") -> str:
    """A policy document with one rule and one condition (JSON is valid YAML flow style)."""
    cond = json.dumps({"field": field, "op": op, "value": value})
    return f"version: 1\nrules:\n  - name: r\n    when: [{cond}]\n    action: {action}\n{extra}"


def matches(doc: str, ctx: Mapping[str, object], *, as_struct: bool = False) -> bool:
    policies = parse_policy(doc, "t.yaml")
    subject = PolicyContext(**ctx) if as_struct else ctx  # type: ignore[arg-type]
    return policies.evaluate(subject).matched == ["r"]


# --------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------

# (field, op, value, context, expected). A context without the field tests the missing case.
OPERATOR_CASES: list[tuple[str, str, object, dict[str, object], bool]] = [
    # eq / neq on strings, missing and None
    ("model", "eq", "gpt-4o", {"model": "gpt-4o"}, True),
    ("model", "eq", "gpt-4o", {"model": "gpt-4o-mini"}, False),
    ("model", "eq", "gpt-4o", {}, False),
    ("model", "eq", "gpt-4o", {"model": None}, False),
    ("model", "neq", "gpt-4o", {"model": "o1"}, True),
    ("model", "neq", "gpt-4o", {"model": "gpt-4o"}, False),
    ("model", "neq", "gpt-4o", {}, True),  # missing: neq is the one true case
    ("model", "neq", "gpt-4o", {"model": None}, True),
    ("direction", "eq", "request", {"direction": "request"}, True),
    ("direction", "eq", "request", {"direction": "response"}, False),
    # eq / neq on numbers and booleans
    ("token_count", "eq", 100, {"token_count": 100}, True),
    ("token_count", "eq", 100, {"token_count": 101}, False),
    ("cost_usd", "neq", 0.5, {"cost_usd": 0.25}, True),
    ("pii_detected", "eq", True, {"pii_detected": True}, True),
    ("pii_detected", "eq", True, {"pii_detected": False}, False),
    ("pii_detected", "eq", False, {}, False),
    ("pii_detected", "neq", True, {}, True),
    # gt / gte / lt / lte on numbers
    ("token_count", "gt", 100, {"token_count": 101}, True),
    ("token_count", "gt", 100, {"token_count": 100}, False),
    ("token_count", "gt", 100, {}, False),
    ("token_count", "gt", 100, {"token_count": "500"}, False),  # wrong type in context
    ("token_count", "gt", 0, {"token_count": True}, False),  # a bool is not a count
    ("token_count", "gte", 100, {"token_count": 100}, True),
    ("token_count", "gte", 100, {"token_count": 99}, False),
    ("cost_usd", "lt", 0.5, {"cost_usd": 0.1}, True),
    ("cost_usd", "lt", 0.5, {"cost_usd": 0.5}, False),
    ("cost_usd", "lt", 0.5, {}, False),
    ("cost_usd", "lte", 0.5, {"cost_usd": 0.5}, True),
    ("cost_usd", "lte", 0.5, {"cost_usd": 0.51}, False),
    ("cost_usd", "gt", 1, {"cost_usd": 1.5}, True),  # int bound, float value
    # risk_level: compared by order none < low < medium < high < critical
    ("risk_level", "gt", "medium", {"risk_level": "high"}, True),
    ("risk_level", "gt", "medium", {"risk_level": "critical"}, True),
    ("risk_level", "gt", "medium", {"risk_level": "medium"}, False),
    ("risk_level", "gt", "medium", {"risk_level": "low"}, False),
    ("risk_level", "gt", "none", {}, False),
    ("risk_level", "gt", "none", {"risk_level": "bogus"}, False),
    ("risk_level", "gte", "high", {"risk_level": "high"}, True),
    ("risk_level", "gte", "high", {"risk_level": "medium"}, False),
    ("risk_level", "lt", "low", {"risk_level": "none"}, True),
    # what the inline score read: where the steering values came from, whom the call goes to
    ("provenance", "eq", "untrusted", {"provenance": "untrusted"}, True),
    ("provenance", "eq", "untrusted", {"provenance": "trusted"}, False),
    ("provenance", "eq", "untrusted", {}, False),
    ("provenance", "in", ["untrusted", "invented"], {"provenance": "invented"}, True),
    ("destination", "eq", "external", {"destination": "external"}, True),
    ("destination", "eq", "external", {"destination": "internal"}, False),
    ("destination", "neq", "internal", {}, True),
    ("risk_level", "lt", "low", {"risk_level": "low"}, False),
    ("risk_level", "lt", "critical", {}, False),
    ("risk_level", "lte", "low", {"risk_level": "low"}, True),
    ("risk_level", "lte", "low", {"risk_level": "medium"}, False),
    ("risk_level", "eq", "high", {"risk_level": "high"}, True),
    ("risk_level", "neq", "high", {}, True),
    # contains: substring on strings, membership on pii_types
    ("endpoint", "contains", "/chat", {"endpoint": "/v1/chat/completions"}, True),
    ("endpoint", "contains", "/chat", {"endpoint": "/v1/embeddings"}, False),
    ("endpoint", "contains", "/chat", {}, False),
    ("pii_types", "contains", "email", {"pii_types": ["phone", "email"]}, True),
    ("pii_types", "contains", "email", {"pii_types": ["phone"]}, False),
    ("pii_types", "contains", "email", {"pii_types": []}, False),
    ("pii_types", "contains", "email", {}, False),
    ("pii_types", "contains", "mail", {"pii_types": ["email"]}, False),  # membership, not substring
    ("pii_types", "contains", "email", {"pii_types": "email"}, False),  # a string is not a list
    # regex: re2 search (unanchored unless the pattern anchors)
    ("agent_name", "regex", "^intern-", {"agent_name": "intern-7"}, True),
    ("agent_name", "regex", "^intern-", {"agent_name": "bob-intern-7"}, False),
    ("agent_name", "regex", "intern-", {"agent_name": "bob-intern-7"}, True),
    ("agent_name", "regex", "^intern-", {}, False),
    ("agent_name", "regex", "^intern-", {"agent_name": 7}, False),
    ("tool_name", "regex", ".", {"tool_name": "shell"}, True),
    ("tool_name", "regex", ".", {}, False),
    ("pii_types", "regex", "^credit", {"pii_types": ["email", "credit_card"]}, True),
    ("pii_types", "regex", "^credit", {"pii_types": ["email"]}, False),
    ("model", "regex", "(?i)^GPT", {"model": "gpt-4o"}, True),
    ("model", "regex", "é$", {"model": "café"}, True),  # text, not bytes
    # in: the context value is one of the listed values (pii_types: any overlap)
    ("model", "in", ["gpt-4o", "o1"], {"model": "o1"}, True),
    ("model", "in", ["gpt-4o", "o1"], {"model": "gpt-4"}, False),
    ("model", "in", ["gpt-4o", "o1"], {}, False),
    ("model", "in", ["gpt-4o", "o1"], {"model": ["o1"]}, False),  # unhashable: false, no error
    ("provider", "in", ["openai"], {"provider": "openai"}, True),
    ("token_count", "in", [1, 2], {"token_count": 2}, True),
    ("risk_level", "in", ["high", "critical"], {"risk_level": "critical"}, True),
    ("risk_level", "in", ["high", "critical"], {"risk_level": "low"}, False),
    ("pii_types", "in", ["email", "ssn"], {"pii_types": ["ssn"]}, True),
    ("pii_types", "in", ["email", "ssn"], {"pii_types": ["phone"]}, False),
    ("pii_types", "in", ["email", "ssn"], {}, False),
    # eq / neq on pii_types: same set, order ignored
    ("pii_types", "eq", ["email", "phone"], {"pii_types": ["phone", "email"]}, True),
    ("pii_types", "eq", ["email", "phone"], {"pii_types": ["email"]}, False),
    ("pii_types", "neq", ["email"], {}, True),
]


@pytest.mark.parametrize("as_struct", [False, True], ids=["dict", "struct"])
@pytest.mark.parametrize(("field", "op", "value", "ctx", "expected"), OPERATOR_CASES)
def test_operator(
    field: str, op: str, value: object, ctx: dict[str, object], expected: bool, as_struct: bool
) -> None:
    assert matches(one_rule(field, op, value), ctx, as_struct=as_struct) is expected


ALIAS_CASES: list[tuple[str, str, str, object, dict[str, object], bool]] = [
    ("equals", "eq", "model", "o1", {"model": "o1"}, True),
    ("equals", "eq", "model", "o1", {"model": "o3"}, False),
    ("not_equals", "neq", "model", "o1", {"model": "o3"}, True),
    ("not_equals", "neq", "model", "o1", {"model": "o1"}, False),
    ("greater_than", "gt", "token_count", 10, {"token_count": 11}, True),
    ("greater_than", "gt", "token_count", 10, {"token_count": 10}, False),
    ("greater_than", "gt", "risk_level", "low", {"risk_level": "medium"}, True),
    ("less_than", "lt", "cost_usd", 1, {"cost_usd": 0.5}, True),
    ("less_than", "lt", "cost_usd", 1, {"cost_usd": 1}, False),
    ("matches", "regex", "endpoint", "/v1/(chat|responses)", {"endpoint": "/v1/responses"}, True),
    ("matches", "regex", "endpoint", "/v1/(chat|responses)", {"endpoint": "/v1/models"}, False),
]


@pytest.mark.parametrize(("alias", "canonical", "field", "value", "ctx", "expected"), ALIAS_CASES)
def test_operator_alias(
    alias: str, canonical: str, field: str, value: object, ctx: dict[str, object], expected: bool
) -> None:
    assert matches(one_rule(field, alias, value), ctx) is expected
    assert matches(one_rule(field, canonical, value), ctx) is expected
    compiled = parse_policy(one_rule(field, alias, value)).rules[0].conditions[0]
    assert compiled.op == canonical


STRANGE_VALUES: list[object] = [object(), [], {}, "x", 3, 2.5, True, None, ["email", 3]]


@pytest.mark.parametrize("strange", STRANGE_VALUES, ids=repr)
def test_evaluate_never_raises_on_odd_context_values(strange: object) -> None:
    """Every operator case against a context whose every field holds an unexpected type."""
    ctx = dict.fromkeys(FIELDS, strange)
    for field, op, value, _, _ in OPERATOR_CASES:
        parse_policy(one_rule(field, op, value)).evaluate(ctx)


def test_regex_memo_stays_correct_past_its_bound() -> None:
    """Repeated values are answered from the memo; overflowing it must not change answers."""
    policies = parse_policy(one_rule("agent_name", "regex", r"^agent-\d*7$"))

    def check(values: range) -> None:
        for i in values:
            expected = str(i).endswith("7")
            assert bool(policies.evaluate({"agent_name": f"agent-{i}"}).matched) is expected

    for _ in range(3):
        check(range(100))  # second and third passes are memo hits
    check(range(10_000))  # overflows the memo at least twice
    check(range(100))


def test_conditions_are_anded() -> None:
    doc = """
rules:
  - name: r
    when:
      - {field: agent_name, op: regex, value: "^intern-"}
      - {field: model, op: in, value: [gpt-4o, o1]}
      - {field: direction, op: eq, value: request}
    action: log
"""
    full = {"agent_name": "intern-1", "model": "o1", "direction": "request"}
    assert matches(doc, full)
    for key in full:
        assert not matches(doc, {k: v for k, v in full.items() if k != key})


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------

ALL_ACTIONS_DOC = """
version: 1
rules:
  - name: log-all
    when: []
    action: log
  - name: block-interns
    when: [{field: agent_name, op: regex, value: "^intern-"}]
    action: block
    message: "interns may not use this model"
  - name: block-o1
    when: [{field: model, op: eq, value: o1}]
    action: block
  - name: redact-email
    conditions: [{field: pii_types, op: contains, value: email}]
    action: redact
  - name: tag-pii
    when: [{field: pii_detected, op: eq, value: true}]
    action: tag
    tag: pii-restricted
  - name: tag-costly
    when: [{field: cost_usd, op: gte, value: 1}]
    action: tag
    tag: high-cost
  - name: disabled-block
    enabled: false
    when: []
    action: block
"""

ACTION_CASES: list[tuple[str, dict[str, object], Decision]] = [
    ("nothing else", {}, Decision(logs=["log-all"], matched=["log-all"])),
    (
        "block with message",
        {"agent_name": "intern-2"},
        Decision(
            block=BlockVerdict("block-interns", "interns may not use this model"),
            logs=["log-all"],
            matched=["log-all", "block-interns"],
        ),
    ),
    (
        "block with default message",
        {"model": "o1"},
        Decision(
            block=BlockVerdict("block-o1", "blocked by policy rule 'block-o1'"),
            logs=["log-all"],
            matched=["log-all", "block-o1"],
        ),
    ),
    (
        "first block wins, all recorded",
        {"agent_name": "intern-2", "model": "o1"},
        Decision(
            block=BlockVerdict("block-interns", "interns may not use this model"),
            logs=["log-all"],
            matched=["log-all", "block-interns", "block-o1"],
        ),
    ),
    (
        "redact",
        {"pii_types": ["email"]},
        Decision(redact=True, logs=["log-all"], matched=["log-all", "redact-email"]),
    ),
    (
        "tags in file order",
        {"pii_detected": True, "cost_usd": 2.0},
        Decision(
            tags=["pii-restricted", "high-cost"],
            logs=["log-all"],
            matched=["log-all", "tag-pii", "tag-costly"],
        ),
    ),
]


@pytest.mark.parametrize(
    ("ctx", "expected"), [c[1:] for c in ACTION_CASES], ids=[c[0] for c in ACTION_CASES]
)
def test_actions(ctx: dict[str, object], expected: Decision) -> None:
    assert parse_policy(ALL_ACTIONS_DOC).evaluate(ctx) == expected


@pytest.mark.parametrize(
    ("tags", "compliance_tag"), [([], "default"), (["a"], "a"), (["a", "b"], "b")]
)
def test_compliance_tag_is_last_tag_or_default(tags: list[str], compliance_tag: str) -> None:
    assert Decision(tags=tags).compliance_tag == compliance_tag


def test_disabled_rule_is_kept_but_not_evaluated() -> None:
    policies = parse_policy(ALL_ACTIONS_DOC)
    assert [r.name for r in policies.rules if not r.enabled] == ["disabled-block"]
    assert policies.evaluate({}).block is None


@pytest.mark.parametrize(
    "doc",
    ["", "\n", "# only a comment\n", "version: 1\n", "version: 1\nrules: []\n", "rules:\n"],
    ids=["empty", "blank", "comment", "no-rules-key", "empty-list", "null-rules"],
)
def test_empty_file_means_no_rules(doc: str) -> None:
    policies = parse_policy(doc)
    assert len(policies) == 0
    assert policies.evaluate({"model": "o1"}) == Decision()


# --------------------------------------------------------------------------------------------
# Malformed files: each error names the line at fault
# --------------------------------------------------------------------------------------------

RULE_HEAD = "version: 1\nrules:\n  - name: r\n"  # the rule's body starts on line 4

MALFORMED: list[tuple[str, str, int, str]] = [
    # (id, document, line at fault, text the message must contain)
    (
        "unknown-field",
        RULE_HEAD + "    when:\n      - {field: user, op: eq, value: x}\n    action: log\n",
        5,
        "unknown field 'user'",
    ),
    (
        "unknown-operator",
        RULE_HEAD + "    when:\n      - field: model\n        op: startswith\n"
        "        value: gpt\n    action: log\n",
        6,
        "unknown operator 'startswith'",
    ),
    (
        "bad-regex-syntax",
        RULE_HEAD + "    when:\n      - field: model\n        op: regex\n"
        "        value: '(unclosed'\n    action: log\n",
        7,
        "bad regex",
    ),
    (
        "regex-lookbehind-not-re2",
        RULE_HEAD + '    when: [{field: model, op: regex, value: "(?<=a)b"}]\n    action: log\n',
        4,
        "bad regex",
    ),
    (
        "gt-with-string-value",
        RULE_HEAD + "    when:\n      - field: token_count\n        op: gt\n"
        '        value: "100"\n    action: log\n',
        7,
        "token_count gt needs a number, got string",
    ),
    (
        "gt-on-string-field",
        RULE_HEAD + "    when:\n      - {field: model, op: gt, value: 5}\n    action: log\n",
        5,
        "operator 'gt' does not apply to model",
    ),
    (
        "contains-on-number",
        RULE_HEAD
        + "    when:\n      - {field: cost_usd, op: contains, value: 5}\n    action: log\n",
        5,
        "does not apply to cost_usd",
    ),
    (
        "in-without-list",
        RULE_HEAD + "    when:\n      - {field: model, op: in, value: gpt-4o}\n    action: log\n",
        5,
        "needs a non-empty list",
    ),
    (
        "in-empty-list",
        RULE_HEAD + "    when:\n      - {field: model, op: in, value: []}\n    action: log\n",
        5,
        "needs a non-empty list",
    ),
    (
        "bool-field-string-value",
        RULE_HEAD
        + "    when:\n      - {field: pii_detected, op: eq, value: 'yes'}\n    action: log\n",
        5,
        "needs true or false",
    ),
    (
        "unknown-risk-level",
        RULE_HEAD
        + "    when:\n      - {field: risk_level, op: gte, value: severe}\n    action: log\n",
        5,
        "needs a risk level",
    ),
    (
        "unknown-direction",
        RULE_HEAD
        + "    when:\n      - {field: direction, op: eq, value: inbound}\n    action: log\n",
        5,
        "request or response",
    ),
    (
        "missing-value",
        RULE_HEAD + "    when:\n      - {field: model, op: eq}\n    action: log\n",
        5,
        "missing required field `value`",
    ),
    (
        "unknown-action",
        RULE_HEAD + "    when: []\n    action: deny\n",
        5,
        "unknown action 'deny'",
    ),
    (
        "tag-without-tag",
        RULE_HEAD + "    when: []\n    action: tag\n",
        5,
        "action tag needs a non-empty `tag`",
    ),
    (
        "tag-on-other-action",
        RULE_HEAD + "    when: []\n    action: log\n    tag: x\n",
        6,
        "`tag` is only used with action: tag",
    ),
    (
        "duplicate-rule-name",
        RULE_HEAD + "    when: []\n    action: log\n  - name: r\n    when: []\n    action: log\n",
        6,
        "duplicate rule name 'r' (first defined at line 3)",
    ),
    (
        "duplicate-key",
        RULE_HEAD + "    when: []\n    action: log\n    action: block\n",
        6,
        "duplicate key 'action'",
    ),
    (
        "unknown-rule-key",
        RULE_HEAD + "    when: []\n    action: log\n    priority: 3\n",
        6,
        "unknown key `priority`",
    ),
    (
        "unknown-condition-key",
        RULE_HEAD + "    when:\n      - {field: model, op: eq, value: x, negate: true}\n"
        "    action: log\n",
        5,
        "unknown key `negate`",
    ),
    (
        "when-and-conditions",
        RULE_HEAD + "    when: []\n    conditions: []\n    action: log\n",
        5,
        "not both",
    ),
    ("missing-when", RULE_HEAD + "    action: log\n", 3, "missing `when`"),
    ("missing-name", "version: 1\nrules:\n  - when: []\n    action: log\n", 3, "`name`"),
    (
        "name-not-string",
        "rules:\n  - name: 12\n    when: []\n    action: log\n",
        2,
        "Expected `str`, got `int`",
    ),
    (
        "yaml-syntax",
        RULE_HEAD + "    when: [{field: model\n    action: log\n",
        5,
        "invalid YAML",
    ),
    ("top-level-list", "- name: r\n", 1, "top level must be a mapping"),
    ("rules-not-list", "version: 1\nrules: {name: r}\n", 2, "Expected `array"),
    ("unsupported-version", "version: 2\nrules: []\n", 1, "unsupported version 2"),
    ("recursive-alias", "version: 1\nrules: &r [*r]\n", 2, "too large or too deep"),
]


@pytest.mark.parametrize(
    ("doc", "line", "text"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_file_names_line(doc: str, line: int, text: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, "f.yaml")
    err = info.value
    assert err.path == "f.yaml"
    assert err.line == line, str(err)
    assert str(err).startswith(f"f.yaml:{line}: ")
    assert text in err.message


def test_error_names_the_rule_at_fault() -> None:
    doc = (
        RULE_HEAD + "    when: []\n    action: log\n  - name: second\n    when: []\n    action: x\n"
    )
    with pytest.raises(PolicyError, match=r"f\.yaml:8: rule 'second': unknown action 'x'"):
        parse_policy(doc, "f.yaml")


# --------------------------------------------------------------------------------------------
# Example files on disk
# --------------------------------------------------------------------------------------------


def test_documented_example_file() -> None:
    policies = load_policy_file(DATA / "example.yaml")
    assert len(policies) == 7
    intern = policies.evaluate(
        {"agent_name": "intern-4", "model": "gpt-4o", "direction": "request", "pii_types": []}
    )
    assert intern.block == BlockVerdict(
        "block-gpt4-for-interns", "interns may not use gpt-4o or o1"
    )
    busy = policies.evaluate(
        PolicyContext(
            agent_name="billing",
            direction="response",
            pii_types=["email", "secret"],
            cost_usd=0.75,
            tool_name="shell",
            risk_level="critical",
            token_count=60_000,
        )
    )
    assert busy.block is None  # the secret rule only applies to requests
    assert busy.redact
    assert busy.tags == ["high-cost", "risky-tool-call"]
    assert busy.compliance_tag == "risky-tool-call"
    assert busy.logs == ["log-big-prompts"]
    quiet = policies.evaluate({"agent_name": "billing", "model": "gpt-4o-mini"})
    assert quiet == Decision()


def test_flow_style_example_file() -> None:
    policies = load_policy_file(DATA / "interns.yaml")
    decision = policies.evaluate({"agent_name": "intern-1", "model": "o1", "pii_detected": True})
    assert decision.block == BlockVerdict("block-gpt4-for-interns", "interns may not use gpt-4o")
    assert decision.compliance_tag == "pii-restricted"


@pytest.mark.parametrize(
    ("name", "line", "text"),
    [("bad_operator.yaml", 8, "unknown operator 'startswith'"), ("bad_regex.yaml", 7, "bad regex")],
)
def test_malformed_example_files(name: str, line: int, text: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_file(DATA / name)
    assert info.value.line == line
    assert str(info.value).startswith(f"{DATA / name}:{line}: ")
    assert text in info.value.message


def test_unreadable_file() -> None:
    with pytest.raises(PolicyError, match="cannot read policy file") as info:
        load_policy_file(DATA / "does-not-exist.yaml")
    assert info.value.line is None


# --------------------------------------------------------------------------------------------
# PolicyStore: load, reload on change, keep previous rules on a bad file
# --------------------------------------------------------------------------------------------

GOOD_V1 = one_rule("model", "eq", "o1", action="block")
GOOD_V2 = one_rule("model", "eq", "gpt-4o", action="block")
BAD = one_rule("model", "eq", "o1", action="explode")


def write(path: Path, text: str, bump: int = 0) -> None:
    """Write and move mtime forward explicitly, so the test never depends on clock granularity."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def blocked(store: PolicyStore, model: str) -> bool:
    return store.evaluate({"model": model}).block is not None


def test_store_starts_empty_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    write(path, GOOD_V1)
    store = PolicyStore(path)
    assert store.generation == 0 and len(store.current) == 0
    assert not blocked(store, "o1")
    store.load()
    assert store.generation == 1 and store.last_error is None
    assert blocked(store, "o1")
    assert not store.maybe_reload()  # unchanged file: nothing to do
    assert store.generation == 1


def test_store_reloads_on_change(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    write(path, GOOD_V1)
    store = PolicyStore(path)
    store.load()
    write(path, GOOD_V2, bump=1)
    assert store.maybe_reload()
    assert store.generation == 2
    assert blocked(store, "gpt-4o") and not blocked(store, "o1")


def test_store_reloads_on_atomic_replace(tmp_path: Path) -> None:
    """Editors and config managers write a new file and rename it over the old one."""
    path = tmp_path / "p.yaml"
    write(path, GOOD_V1)
    store = PolicyStore(path)
    store.load()
    staged = tmp_path / "p.yaml.new"
    write(staged, GOOD_V2)
    os.replace(staged, path)
    assert store.maybe_reload()
    assert blocked(store, "gpt-4o")


def test_bad_reload_keeps_previous_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.yaml"
    write(path, GOOD_V1)
    store = PolicyStore(path)
    store.load()
    write(path, BAD, bump=1)
    with caplog.at_level(logging.ERROR, logger="govrix.policy"):
        assert not store.maybe_reload()
        assert not store.maybe_reload()  # same bad file: not retried, not logged again
    assert store.generation == 1
    assert blocked(store, "o1")  # previous rules still active
    assert store.last_error is not None and store.last_error.line == 5
    errors = [r for r in caplog.records if r.name == "govrix.policy"]
    assert len(errors) == 1
    assert f"{path}:5: rule 'r': unknown action 'explode'" in errors[0].getMessage()
    write(path, GOOD_V2, bump=2)  # fixed
    assert store.maybe_reload()
    assert store.generation == 2 and store.last_error is None
    assert blocked(store, "gpt-4o")


def test_deleted_file_keeps_previous_rules(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    write(path, GOOD_V1)
    store = PolicyStore(path)
    store.load()
    path.unlink()
    assert not store.maybe_reload()
    assert store.last_error is not None and "missing" in store.last_error.message
    assert blocked(store, "o1")
    write(path, GOOD_V2)
    assert store.maybe_reload()
    assert blocked(store, "gpt-4o")


def test_bad_initial_load_raises_and_keeps_current(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    write(path, BAD)
    store = PolicyStore()
    with pytest.raises(PolicyError) as info:
        store.load(path)
    assert info.value.line == 5
    assert store.last_error is info.value
    assert store.generation == 0 and len(store.current) == 0
    assert not store.maybe_reload()  # the same bad file is not retried


def test_store_without_path() -> None:
    store = PolicyStore()
    assert not store.maybe_reload()
    with pytest.raises(PolicyError, match="no policy file configured"):
        store.load()


async def test_watch_picks_up_changes(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    write(path, GOOD_V1)
    store = PolicyStore(path)
    store.load()
    task = asyncio.create_task(watch(store, interval=0.01))
    try:
        write(path, GOOD_V2, bump=1)
        async with asyncio.timeout(10):
            while store.generation < 2:
                await asyncio.sleep(0.01)
        assert blocked(store, "gpt-4o")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_policyset_default_is_empty() -> None:
    assert PolicySet().evaluate({"model": "o1"}) == Decision()
