"""Reading a policy file: YAML with lines -> structure (msgspec) -> checked rules -> PolicySet.

The file format is documented in ``docs/policy.md``, its conditions in ``docs/conditions.md``.
Any error raises :class:`PolicyError` naming ``file:line`` and the rule at fault.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec
import yaml

from addon.conditions import Condition, ConditionError, ConditionSpec, check
from addon.policy.evaluate import PolicySet
from addon.policy.model import ACTIONS, FIELDS, PolicyError, Rule
from addon.yaml_lines import KeyPath, Located, dotted, load, msgspec_error

__all__ = ["load_policy_file", "load_policy_text", "parse_policy"]

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: _Name
    action: str
    # ``conditions`` is an alias of ``when``; exactly one of them must be present.
    when: list[ConditionSpec] | None = None
    conditions: list[ConditionSpec] | None = None
    message: str | None = None
    tag: str | None = None
    enabled: bool = True
    description: str | None = None


class _FileSpec(msgspec.Struct, forbid_unknown_fields=True):
    version: int = 1
    rules: list[_RuleSpec] | None = None


def _rule_label(raw: object, path: KeyPath) -> str:
    """``rule 'name', `` for an error inside a rule that has a readable name."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(raw, dict):
        rules = raw.get("rules")
        i = path[1]
        if isinstance(rules, list) and isinstance(i, int) and isinstance(rules[i], dict):
            name = rules[i].get("name")
            if isinstance(name, str) and name:
                return f"rule {name!r}, "
    return ""


def _where(raw: object, path: KeyPath) -> str:
    """Where a structural error is: ``rule 'r', condition #2`` or ``rule 'r', rules[0].tag``."""
    label = _rule_label(raw, path)
    if len(path) >= 4 and path[2] in ("when", "conditions") and isinstance(path[3], int):
        return f"{label}condition #{path[3] + 1}"
    return f"{label}{dotted(path) or 'top level'}"


def parse_policy(text: str, source: str = "<string>") -> PolicySet:
    """Parse and compile a policy document; raise :class:`PolicyError` naming the line at fault."""
    raw, doc = load(text, source, PolicyError)
    if raw is None:  # empty file (or only comments): no rules
        return PolicySet((), source)
    if not isinstance(raw, dict):
        raise doc.error((), "the top level must be a mapping with `version` and `rules`")
    try:
        spec = msgspec.convert(raw, _FileSpec)
    except msgspec.ValidationError as e:
        path, problem = msgspec_error(e)
        raise doc.error(path, f"{_where(raw, path)}: {problem}") from None
    if spec.version != 1:
        raise doc.error(("version",), f"unsupported version {spec.version} (expected 1)")
    rules: list[Rule] = []
    first_seen: dict[str, int] = {}
    for i, rs in enumerate(spec.rules or ()):
        rule = _check_rule(doc, ("rules", i), rs)
        if rule.name in first_seen:
            raise doc.error(
                ("rules", i, "name"),
                f"duplicate rule name {rule.name!r} "
                f"(first defined at line {first_seen[rule.name]})",
            )
        first_seen[rule.name] = rule.line
        rules.append(rule)
    return PolicySet(rules, source)


def _check_rule(doc: Located, path: KeyPath, rs: _RuleSpec) -> Rule:
    label = f"rule {rs.name!r}"
    if rs.action not in ACTIONS:
        raise doc.error(
            (*path, "action"),
            f"{label}: unknown action {rs.action!r} (expected one of {', '.join(ACTIONS)})",
        )
    if rs.action == "tag":
        if not rs.tag or not rs.tag.strip():
            raise doc.error((*path, "action"), f"{label}: action tag needs a non-empty `tag` value")
    elif rs.tag is not None:
        raise doc.error((*path, "tag"), f"{label}: `tag` is only used with action: tag")
    if rs.when is not None and rs.conditions is not None:
        raise doc.error(
            (*path, "conditions"), f"{label}: give `when` or `conditions` (an alias), not both"
        )
    key = "when" if rs.when is not None else "conditions"
    specs = rs.when if rs.when is not None else rs.conditions
    if specs is None:
        raise doc.error(
            path, f"{label}: missing `when` (list of conditions; `when: []` matches every call)"
        )
    return Rule(
        name=rs.name,
        action=rs.action,  # type: ignore[arg-type]  # checked against ACTIONS above
        conditions=tuple(
            check_located(doc, (*path, key, j), f"{label}, condition #{j + 1}", cs)
            for j, cs in enumerate(specs)
        ),
        message=rs.message,
        tag=rs.tag,
        enabled=rs.enabled,
        line=doc.line_of(path) or 0,
    )


def check_located(doc: Located, path: KeyPath, where: str, cs: ConditionSpec) -> Condition:
    """Check one condition, reporting a problem at the line of the key at fault."""
    try:
        return check(cs.field, cs.op, cs.value, FIELDS, doc.line_of(path) or 0)
    except ConditionError as e:
        raise doc.error((*path, e.key), f"{where}: {e.message}") from None


def load_policy_text(text: str, source: str) -> PolicySet:
    """Compile policy text that did not come from a file (the API, a stored version).

    Unlike :func:`parse_policy`, the text may be anything a client sent, so every failure is a
    :class:`PolicyError`. A YAML library value error (``2001-13-45`` as a timestamp), nesting deep
    enough to exhaust the recursive composer, or a control character the YAML reader refuses
    before parsing starts would otherwise escape as a bare exception, and callers
    (``PUT /api/v1/policies``, the proxy's version loader) must be able to refuse the text and
    keep their current rules instead of failing.
    """
    try:
        return parse_policy(text, source)
    except PolicyError:
        raise
    except yaml.reader.ReaderError as e:  # raised by the loader's constructor, before parsing
        line = text.count("\n", 0, e.position) + 1
        raise PolicyError(source, line, f"invalid YAML: {e.reason} (#x{e.character:04x})") from None
    except yaml.YAMLError as e:
        raise PolicyError(source, None, f"invalid YAML: {e}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise PolicyError(source, None, f"invalid YAML: {type(e).__name__}: {e}") from None


def load_policy_file(path: str | os.PathLike[str]) -> PolicySet:
    """Read and compile a policy file; raise :class:`PolicyError` on any problem."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(source, None, f"cannot read policy file: {e}") from None
    return parse_policy(text, source)
