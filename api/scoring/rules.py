"""Loading, validation and compilation of the YAML rule files under `rules/`.

A rule file holds `rules:`, a list of rules:

    - id: gdpr.pii_egress                 # unique across all files
      description: Personal data leaves the organisation
      explanation: Why this matters, shown in violations
      refs: ["GDPR:Art_44", "GDPR:Art_5(1)(f)"]   # FRAMEWORK:ref; frameworks derive from them
      conditions:                          # ANDed; the language of docs/conditions.md
        - {field: data_classes, op: in, value: [pii, pii_sensitive]}
        - {field: egress, op: eq, value: true}
      actions:                             # each a one-key mapping
        - add_score: 25
        - add_violation: high              # one violation per ref, with this severity
        - add_mitigation: Require a transfer basis before sending personal data out
        - assert_fact: pii_egress          # a flag other rules may test with eq: true

Conditions are those of policy files (one compiler, `addon/conditions.py`); their fields are the
base facts of `facts.py` and the flags some rule asserts. `regex` is case-sensitive: `scope`,
`verb`, `domain` and `resource_type` are lower-cased when extracted, other text is not (use `(?i)`). Flags start false and may only be
tested with `eq: true`: the rule set is then monotonic, so the fixed point does not depend on rule
order. Everything is checked at load (an error names `file:line`, the rule and the key at fault)
and compiled to plain closures once, so scoring never touches YAML or re-parses a pattern.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, cast

import msgspec

from addon.conditions import (
    Condition,
    ConditionError,
    ConditionSpec,
    FieldType,
    Test,
    check,
    compile_all,
)
from addon.yaml_lines import KeyPath, Located, SourceError, load, msgspec_error
from api.scoring.bands import SEVERITIES, Severity
from api.scoring.facts import BASE_FACTS, FactKind

RULES_DIR = Path(__file__).with_name("rules")
FRAMEWORKS = frozenset(
    {"GDPR", "HIPAA", "SOC2", "PCI_DSS", "ISO_27001", "EU_AI_Act", "OWASP_LLM", "OWASP_Agentic"}
)
_RULE_KEYS = frozenset({"id", "description", "explanation", "refs", "conditions", "actions"})
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
_FLAG_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_REF_RE = re.compile(r"^(?P<fw>[A-Za-z0-9_]+):\S+$")
ACTIONS = frozenset({"assert_fact", "add_score", "add_violation", "add_mitigation"})

# The condition language's type of each kind of fact (sets and sequences are both lists).
_FIELD_TYPE: Final[dict[FactKind, FieldType]] = {
    FactKind.STR: FieldType("string"),
    FactKind.NUM: FieldType("number"),
    FactKind.BOOL: FieldType("boolean"),
    FactKind.SET: FieldType("list"),
    FactKind.SEQ: FieldType("list"),
    FactKind.FLAG: FieldType("boolean"),
}
_BASE_FIELDS: Final[dict[str, FieldType]] = {n: _FIELD_TYPE[k] for n, k in BASE_FACTS.items()}


class RuleError(SourceError, ValueError):
    """A rule file is invalid; ``str()`` reads ``file:line: rule 'id': problem``."""

    def __init__(
        self, path: str, line: int | None, problem: str, rule_id: str | None = None
    ) -> None:
        super().__init__(path, line, f"rule {rule_id!r}: {problem}" if rule_id else problem)
        self.rule_id = rule_id
        self.problem = problem


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One compiled rule."""

    id: str
    file: str
    line: int
    description: str
    explanation: str
    refs: tuple[str, ...]
    frameworks: tuple[str, ...]
    # The conjunction of the conditions on base facts only; flags are tracked by the engine.
    test: Test
    flag_conditions: tuple[str, ...]
    score: float
    violation: Severity | None
    mitigations: tuple[str, ...]
    asserts: tuple[str, ...]


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


# --- parsing a file --------------------------------------------------------------------------


class _Draft(msgspec.Struct, kw_only=True):
    """A rule after shape checks, before its conditions are resolved against known facts."""

    id: str
    doc: Located
    path: KeyPath
    description: str
    explanation: str
    refs: tuple[str, ...]
    frameworks: tuple[str, ...]
    conditions: list[Any]
    score: float
    violation: Severity | None
    mitigations: tuple[str, ...]
    asserts: tuple[str, ...]


def _error(doc: Located, path: KeyPath, problem: str, rule_id: str | None = None) -> RuleError:
    return RuleError(doc.source, doc.line_of(path), problem, rule_id)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _parse_actions(
    doc: Located, path: KeyPath, rid: str, actions: Any
) -> tuple[float, Severity | None, tuple[str, ...], tuple[str, ...]]:
    if not isinstance(actions, list) or not actions:
        raise _error(doc, path, "'actions' must be a non-empty list", rid)
    score = 0.0
    violation: Severity | None = None
    mitigations: list[str] = []
    asserts: list[str] = []
    for i, action in enumerate(actions):
        at = (*path, i)
        if not isinstance(action, dict) or len(action) != 1:
            raise _error(doc, at, f"each action must be a one-key mapping, got {action!r}", rid)
        ((kind, value),) = action.items()
        if kind not in ACTIONS:
            raise _error(
                doc, at, f"unknown action {kind!r} (expected one of {sorted(ACTIONS)})", rid
            )
        if kind == "add_score":
            if not _num(value) or not -100 <= value <= 100:
                raise _error(doc, at, f"add_score needs a number in -100..100, got {value!r}", rid)
            score += float(value)
        elif kind == "add_violation":
            if value not in SEVERITIES:
                raise _error(doc, at, f"add_violation needs a severity {SEVERITIES}", rid)
            violation = cast(Severity, value)
        elif kind == "add_mitigation":
            if not isinstance(value, str) or not value.strip():
                raise _error(doc, at, "add_mitigation needs a non-empty string", rid)
            mitigations.append(value.strip())
        else:
            if not isinstance(value, str) or not _FLAG_RE.match(value):
                raise _error(doc, at, f"assert_fact needs a snake_case name, got {value!r}", rid)
            if value in BASE_FACTS:
                raise _error(doc, at, f"assert_fact cannot overwrite base fact {value!r}", rid)
            asserts.append(value)
    return score, violation, tuple(mitigations), tuple(asserts)


def _parse_rule(doc: Located, raw: Any, index: int) -> _Draft:
    path: KeyPath = ("rules", index)
    if not isinstance(raw, dict):
        raise _error(doc, path, f"rule #{index + 1} is not a mapping")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise _error(doc, path, f"rule #{index + 1} needs an id like 'gdpr.pii_egress'")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise _error(doc, (*path, min(unknown)), f"unknown keys {sorted(unknown)}", rid)
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise _error(doc, path, "'description' is required", rid)
    explanation = raw.get("explanation", description)
    if not isinstance(explanation, str):
        raise _error(doc, (*path, "explanation"), "'explanation' must be a string", rid)
    refs = raw.get("refs", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise _error(doc, (*path, "refs"), "'refs' must be a list of 'FRAMEWORK:ref' strings", rid)
    frameworks: list[str] = []
    for j, ref in enumerate(refs):
        m = _REF_RE.match(ref)
        if m is None or m.group("fw") not in FRAMEWORKS:
            raise _error(
                doc,
                (*path, "refs", j),
                f"bad ref {ref!r} (framework must be in {sorted(FRAMEWORKS)})",
                rid,
            )
        if m.group("fw") not in frameworks:
            frameworks.append(m.group("fw"))
    conditions = raw.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise _error(doc, (*path, "conditions"), "'conditions' must be a non-empty list", rid)
    score, violation, mitigations, asserts = _parse_actions(
        doc, (*path, "actions"), rid, raw.get("actions")
    )
    if violation is not None and not refs:
        raise _error(doc, (*path, "actions"), "add_violation needs at least one ref", rid)
    return _Draft(
        id=rid,
        doc=doc,
        path=path,
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


def _condition(draft: _Draft, j: int, raw: Any, fields: Mapping[str, FieldType]) -> Condition:
    """Check one condition with the shared checker; errors point at the key at fault."""
    doc, rid = draft.doc, draft.id
    path = (*draft.path, "conditions", j)
    where = f"condition #{j + 1}: "
    if isinstance(raw, dict) and "fact" in raw:
        raise _error(
            doc, path, where + "write conditions as {field: NAME, op: OP, value: VALUE}", rid
        )
    try:
        spec = msgspec.convert(raw, ConditionSpec)
    except msgspec.ValidationError as e:
        at, problem = msgspec_error(e, path)
        raise _error(doc, at, where + problem, rid) from None
    try:
        cond = check(spec.field, spec.op, spec.value, fields, doc.line_of(path) or 0)
    except ConditionError as e:
        raise _error(doc, (*path, e.key), where + e.message, rid) from None
    if spec.field not in BASE_FACTS and (cond.op != "eq" or cond.value is not True):
        raise _error(
            doc,
            (*path, "op" if cond.op != "eq" else "value"),
            f"{where}flag {spec.field!r} may only be tested with eq: true (monotonic rules)",
            rid,
        )
    return cond


def _compile(draft: _Draft, fields: Mapping[str, FieldType]) -> Rule:
    conditions = [_condition(draft, j, raw, fields) for j, raw in enumerate(draft.conditions)]
    return Rule(
        id=draft.id,
        file=draft.doc.source,
        line=draft.doc.line_of(draft.path) or 0,
        description=draft.description,
        explanation=draft.explanation,
        refs=draft.refs,
        frameworks=draft.frameworks,
        test=compile_all((c for c in conditions if c.field in BASE_FACTS), fields),
        flag_conditions=tuple(
            dict.fromkeys(c.field for c in conditions if c.field not in BASE_FACTS)
        ),
        score=draft.score,
        violation=draft.violation,
        mitigations=draft.mitigations,
        asserts=draft.asserts,
    )


def _read_file(path: Path) -> tuple[Located, list[Any]]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(source, None, f"cannot read rules: {exc}") from exc
    raw, doc = load(text, source, RuleError)
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
        raise _error(doc, ("rules",), "top level must be a mapping with a 'rules' list")
    return doc, cast(list[Any], raw["rules"])


def load_rules(paths: Iterable[Path]) -> RuleSet:
    """Load, validate and compile rule files; raises RuleError naming file:line, rule, problem."""
    drafts: list[_Draft] = []
    seen: dict[str, str] = {}
    files: list[str] = []
    for path in paths:
        doc, raws = _read_file(path)
        files.append(doc.source)
        for i, raw in enumerate(raws):
            draft = _parse_rule(doc, raw, i)
            if draft.id in seen:
                raise _error(
                    doc,
                    draft.path,
                    f"duplicate rule id (first defined in {seen[draft.id]})",
                    draft.id,
                )
            seen[draft.id] = f"{doc.source}:{doc.line_of(draft.path)}"
            drafts.append(draft)
    flags = frozenset(f for d in drafts for f in d.asserts)
    fields = {**_BASE_FIELDS, **dict.fromkeys(sorted(flags), _FIELD_TYPE[FactKind.FLAG])}
    rules = tuple(_compile(d, fields) for d in drafts)
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
