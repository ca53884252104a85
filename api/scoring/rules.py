"""Loading, validation and compilation of the YAML rule files under `rules/`.

A rule file holds `rules:`, a list of rules:

    - id: gdpr.pii_egress                 # unique across all files
      description: Personal data leaves the organisation
      explanation: Why this matters, shown in violations
      refs: ["GDPR:Art_44", "GDPR:Art_5(1)(f)"]   # FRAMEWORK:ref; frameworks derive from them
      conditions:                          # ANDed; each is {fact: NAME, OPERATOR: VALUE}
        - {fact: data_classes, contains_any: [pii, pii_sensitive]}
        - {fact: egress, eq: true}
      actions:                             # each a one-key mapping
        - add_score: 25
        - add_violation: high              # one violation per ref, with this severity
        - add_mitigation: Require a transfer basis before sending personal data out
        - assert_fact: pii_egress          # a flag other rules may test with {eq: true}

Operators (which fact kinds accept them is checked at load): eq ne in not_in (values); gt gte lt
lte (numbers; false when the fact is unknown); glob (whole value) and regex (search) on text,
compared lower-case; exists (true/false); contains not_contains contains_any contains_all (sets);
any_glob any_regex size_gte (sets and sequences, e.g. prior_actions).

Flags asserted by rules start false and may only be tested with `eq: true`: the rule set is then
monotonic, so the fixed point does not depend on rule order. Everything is checked at load and
compiled to plain closures once, so scoring never touches YAML or re-parses a pattern.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import msgspec
import yaml

from api.scoring.facts import BASE_FACTS, FactKind, Facts
from api.scoring.models import Severity

RULES_DIR = Path(__file__).with_name("rules")
FRAMEWORKS = frozenset(
    {"GDPR", "HIPAA", "SOC2", "PCI_DSS", "ISO_27001", "EU_AI_Act", "OWASP_LLM", "OWASP_Agentic"}
)
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
_RULE_KEYS = frozenset({"id", "description", "explanation", "refs", "conditions", "actions"})
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
_FLAG_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_REF_RE = re.compile(r"^(?P<fw>[A-Za-z0-9_]+):\S+$")

_ALL_VALUE = frozenset({FactKind.STR, FactKind.NUM, FactKind.BOOL})
# operator → fact kinds it applies to
OPERATORS: dict[str, frozenset[FactKind]] = {
    "eq": _ALL_VALUE | {FactKind.FLAG},
    "ne": _ALL_VALUE,
    "in": frozenset({FactKind.STR, FactKind.NUM}),
    "not_in": frozenset({FactKind.STR, FactKind.NUM}),
    "gt": frozenset({FactKind.NUM}),
    "gte": frozenset({FactKind.NUM}),
    "lt": frozenset({FactKind.NUM}),
    "lte": frozenset({FactKind.NUM}),
    "glob": frozenset({FactKind.STR}),
    "regex": frozenset({FactKind.STR}),
    "exists": _ALL_VALUE,
    "contains": frozenset({FactKind.SET, FactKind.SEQ}),
    "contains_any": frozenset({FactKind.SET}),
    "contains_all": frozenset({FactKind.SET}),
    "not_contains": frozenset({FactKind.SET}),
    "any_glob": frozenset({FactKind.SET, FactKind.SEQ}),
    "any_regex": frozenset({FactKind.SET, FactKind.SEQ}),
    "size_gte": frozenset({FactKind.SET, FactKind.SEQ}),
}
ACTIONS = frozenset({"assert_fact", "add_score", "add_violation", "add_mitigation"})

Check = Callable[[Facts], bool]


class RuleError(ValueError):
    """A rule file is invalid; the message names the file, the rule id and the problem."""

    def __init__(self, file: str, rule_id: str | None, problem: str) -> None:
        where = f"{file}: rule {rule_id!r}" if rule_id else file
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.rule_id = rule_id
        self.problem = problem


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One compiled rule."""

    id: str
    file: str
    description: str
    explanation: str
    refs: tuple[str, ...]
    frameworks: tuple[str, ...]
    checks: tuple[Check, ...]
    # The conjunction of the conditions on base facts only; flags are tracked by the engine.
    test: Check
    flag_conditions: tuple[str, ...]
    score: float
    violation: Severity | None
    mitigations: tuple[str, ...]
    asserts: tuple[str, ...]

    def matches(self, facts: Facts) -> bool:
        """Whether every condition holds."""
        return all(check(facts) for check in self.checks)


class RuleSet(msgspec.Struct, frozen=True, kw_only=True):
    """All loaded rules, indexed for the engine's agenda.

    Rules on base facts only are tested once per event. A rule that needs flags waits until the
    last of them is asserted (`dependents` maps a flag to the derived rules waiting on it), and is
    then tested once: base facts never change and flags never go back to false.
    """

    rules: tuple[Rule, ...]
    base_rules: tuple[Rule, ...]
    derived_rules: tuple[Rule, ...]
    dependents: dict[str, tuple[int, ...]]
    # How many distinct flags each derived rule waits for, in derived_rules order.
    flag_counts: tuple[int, ...]
    flags: frozenset[str]
    files: tuple[str, ...]


# --- compiling conditions --------------------------------------------------------------------


def _glob_re(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _compile_check(name: str, kind: FactKind, op: str, value: Any) -> Check:
    """Build the predicate for one condition; raises ValueError with the problem."""
    if op in ("gt", "gte", "lt", "lte"):
        if not _num(value):
            raise ValueError(f"operator {op!r} on {name!r} needs a number, got {value!r}")
        bound = float(value)
        cmp: Callable[[float, float], bool] = {
            "gt": float.__gt__,
            "gte": float.__ge__,
            "lt": float.__lt__,
            "lte": float.__le__,
        }[op]
        return lambda f: (v := f[name]) is not None and cmp(float(v), bound)
    if op in ("eq", "ne"):
        if kind is FactKind.FLAG and value is not True:
            raise ValueError(f"flag {name!r} may only be tested with eq: true (monotonic rules)")
        if kind is FactKind.BOOL and not isinstance(value, bool):
            raise ValueError(f"operator {op!r} on boolean fact {name!r} needs true or false")
        if kind is FactKind.NUM and not _num(value):
            raise ValueError(f"operator {op!r} on numeric fact {name!r} needs a number")
        if kind is FactKind.STR and not isinstance(value, str):
            raise ValueError(f"operator {op!r} on text fact {name!r} needs a string")
        if op == "eq":
            return lambda f: f[name] == value
        return lambda f: (v := f[name]) is not None and v != value
    if op in ("in", "not_in", "contains_any", "contains_all"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"operator {op!r} on {name!r} needs a non-empty list")
        options = frozenset(value)
        if op == "in":
            return lambda f: f[name] in options
        if op == "not_in":
            return lambda f: (v := f[name]) is not None and v not in options
        if op == "contains_any":
            return lambda f: not options.isdisjoint(f[name])
        return lambda f: options <= f[name]
    if op in ("contains", "not_contains"):
        if not isinstance(value, str):
            raise ValueError(f"operator {op!r} on {name!r} needs a string")
        if op == "contains":
            return lambda f: value in f[name]
        return lambda f: value not in f[name]
    if op in ("glob", "regex", "any_glob", "any_regex"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"operator {op!r} on {name!r} needs a pattern string")
        try:
            # Globs match the whole (lower-cased) value; regexes search anywhere in it.
            rx = _glob_re(value).match if "glob" in op else re.compile(value).search
        except re.error as exc:
            raise ValueError(f"bad regex for {name!r}: {exc}") from exc
        if op.startswith("any_"):
            return lambda f: any(rx(a.lower()) for a in f[name])
        return lambda f: (v := f[name]) is not None and rx(v.lower()) is not None
    if op == "exists":
        if not isinstance(value, bool):
            raise ValueError(f"operator 'exists' on {name!r} needs true or false")
        return lambda f: (f[name] is not None) is value
    if op == "size_gte":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"operator 'size_gte' on {name!r} needs an integer")
        return lambda f: len(f[name]) >= value
    raise ValueError(f"unknown operator {op!r}")  # pragma: no cover - guarded by caller


# --- parsing a file --------------------------------------------------------------------------


class _Draft(msgspec.Struct, kw_only=True):
    """A rule after shape checks, before its conditions are resolved against known facts."""

    id: str
    file: str
    description: str
    explanation: str
    refs: tuple[str, ...]
    frameworks: tuple[str, ...]
    conditions: list[dict[str, Any]]
    score: float
    violation: Severity | None
    mitigations: tuple[str, ...]
    asserts: tuple[str, ...]


def _parse_actions(
    file: str, rid: str, actions: Any
) -> tuple[float, Severity | None, tuple[str, ...], tuple[str, ...]]:
    if not isinstance(actions, list) or not actions:
        raise RuleError(file, rid, "'actions' must be a non-empty list")
    score = 0.0
    violation: Severity | None = None
    mitigations: list[str] = []
    asserts: list[str] = []
    for action in actions:
        if not isinstance(action, dict) or len(action) != 1:
            raise RuleError(file, rid, f"each action must be a one-key mapping, got {action!r}")
        ((kind, value),) = action.items()
        if kind not in ACTIONS:
            raise RuleError(
                file, rid, f"unknown action {kind!r} (expected one of {sorted(ACTIONS)})"
            )
        if kind == "add_score":
            if not _num(value) or not -100 <= value <= 100:
                raise RuleError(file, rid, f"add_score needs a number in -100..100, got {value!r}")
            score += float(value)
        elif kind == "add_violation":
            if value not in SEVERITIES:
                raise RuleError(file, rid, f"add_violation needs a severity {SEVERITIES}")
            violation = cast(Severity, value)
        elif kind == "add_mitigation":
            if not isinstance(value, str) or not value.strip():
                raise RuleError(file, rid, "add_mitigation needs a non-empty string")
            mitigations.append(value.strip())
        else:
            if not isinstance(value, str) or not _FLAG_RE.match(value):
                raise RuleError(file, rid, f"assert_fact needs a snake_case name, got {value!r}")
            if value in BASE_FACTS:
                raise RuleError(file, rid, f"assert_fact cannot overwrite base fact {value!r}")
            asserts.append(value)
    return score, violation, tuple(mitigations), tuple(asserts)


def _parse_rule(file: str, raw: Any, index: int) -> _Draft:
    if not isinstance(raw, dict):
        raise RuleError(file, None, f"rule #{index + 1} is not a mapping")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise RuleError(file, None, f"rule #{index + 1} needs an id like 'gdpr.pii_egress'")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RuleError(file, rid, f"unknown keys {sorted(unknown)}")
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise RuleError(file, rid, "'description' is required")
    explanation = raw.get("explanation", description)
    if not isinstance(explanation, str):
        raise RuleError(file, rid, "'explanation' must be a string")
    refs = raw.get("refs", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise RuleError(file, rid, "'refs' must be a list of 'FRAMEWORK:ref' strings")
    frameworks: list[str] = []
    for ref in refs:
        m = _REF_RE.match(ref)
        if m is None or m.group("fw") not in FRAMEWORKS:
            raise RuleError(
                file, rid, f"bad ref {ref!r} (framework must be in {sorted(FRAMEWORKS)})"
            )
        if m.group("fw") not in frameworks:
            frameworks.append(m.group("fw"))
    conditions = raw.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise RuleError(file, rid, "'conditions' must be a non-empty list")
    score, violation, mitigations, asserts = _parse_actions(file, rid, raw.get("actions"))
    if violation is not None and not refs:
        raise RuleError(file, rid, "add_violation needs at least one ref")
    return _Draft(
        id=rid,
        file=file,
        description=description.strip(),
        explanation=explanation.strip(),
        refs=tuple(refs),
        frameworks=tuple(frameworks),
        conditions=conditions,
        score=score,
        violation=violation,
        mitigations=mitigations,
        asserts=asserts,
    )


def _always(_: Facts) -> bool:
    return True


def _conjoin(checks: list[Check]) -> Check:
    """One predicate for a list, avoiding a generator per call (the hot loop of scoring)."""
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda f: a(f) and b(f)
    if len(checks) == 3:
        a, b, c = checks
        return lambda f: a(f) and b(f) and c(f)
    frozen = tuple(checks)
    return lambda f: all(check(f) for check in frozen)


def _compile(draft: _Draft, flags: frozenset[str]) -> Rule:
    checks: list[Check] = []
    base_checks: list[Check] = []
    flag_conditions: list[str] = []
    for cond in draft.conditions:
        if not isinstance(cond, dict) or set(cond) - {"fact"} == set() or "fact" not in cond:
            raise RuleError(
                draft.file, draft.id, f"condition must be {{fact: NAME, OP: VALUE}}: {cond!r}"
            )
        name = cond["fact"]
        ops = [k for k in cond if k != "fact"]
        if len(ops) != 1:
            raise RuleError(draft.file, draft.id, f"condition needs exactly one operator: {cond!r}")
        op = ops[0]
        if name in BASE_FACTS:
            kind = BASE_FACTS[name]
        elif name in flags:
            kind = FactKind.FLAG
            flag_conditions.append(name)
        else:
            raise RuleError(
                draft.file, draft.id, f"unknown fact {name!r} (not a base fact, no rule asserts it)"
            )
        if op not in OPERATORS:
            raise RuleError(
                draft.file, draft.id, f"bad operator {op!r} (expected one of {sorted(OPERATORS)})"
            )
        if kind not in OPERATORS[op]:
            raise RuleError(
                draft.file, draft.id, f"bad operator {op!r} for {kind.value} fact {name!r}"
            )
        try:
            check = _compile_check(name, kind, op, cond[op])
        except ValueError as exc:
            raise RuleError(draft.file, draft.id, str(exc)) from exc
        checks.append(check)
        if kind is not FactKind.FLAG:
            base_checks.append(check)
    return Rule(
        id=draft.id,
        file=draft.file,
        description=draft.description,
        explanation=draft.explanation,
        refs=draft.refs,
        frameworks=draft.frameworks,
        checks=tuple(checks),
        test=_conjoin(base_checks),
        flag_conditions=tuple(dict.fromkeys(flag_conditions)),
        score=draft.score,
        violation=draft.violation,
        mitigations=draft.mitigations,
        asserts=draft.asserts,
    )


def _read_file(path: Path) -> list[Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(str(path), None, f"cannot read rules: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(str(path), None, "top level must be a mapping with a 'rules' list")
    return cast(list[Any], doc["rules"])


def load_rules(paths: Iterable[Path]) -> RuleSet:
    """Load, validate and compile rule files; raises RuleError naming file, rule and problem."""
    drafts: list[_Draft] = []
    seen: dict[str, str] = {}
    files: list[str] = []
    for path in paths:
        file = str(path)
        files.append(file)
        for i, raw in enumerate(_read_file(path)):
            draft = _parse_rule(file, raw, i)
            if draft.id in seen:
                raise RuleError(
                    file, draft.id, f"duplicate rule id (first defined in {seen[draft.id]})"
                )
            seen[draft.id] = file
            drafts.append(draft)
    flags = frozenset(f for d in drafts for f in d.asserts)
    rules = tuple(_compile(d, flags) for d in drafts)
    derived = tuple(r for r in rules if r.flag_conditions)
    dependents: dict[str, list[int]] = {}
    for i, rule in enumerate(derived):
        for flag in rule.flag_conditions:
            dependents.setdefault(flag, []).append(i)
    return RuleSet(
        rules=rules,
        base_rules=tuple(r for r in rules if not r.flag_conditions),
        derived_rules=derived,
        dependents={k: tuple(v) for k, v in dependents.items()},
        flag_counts=tuple(len(r.flag_conditions) for r in derived),
        flags=flags,
        files=tuple(files),
    )


def load_rules_dir(rules_dir: Path | None = None) -> RuleSet:
    """Load every `*.yaml` file of a directory (the shipped rules by default), in name order."""
    directory = rules_dir or RULES_DIR
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise RuleError(str(directory), None, "no *.yaml rule files found")
    return load_rules(paths)
