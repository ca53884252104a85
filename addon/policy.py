"""Policy rules from one YAML file (``GOVRIX_POLICY_FILE``), compiled once, evaluated per call.

A pure module: no mitmproxy import and no I/O on evaluation. The file format is documented in
``docs/policy.md``; ``tests/data/policies/example.yaml`` is a worked example.

Loading composes the YAML into nodes (so every value keeps its line), validates the structure into
msgspec Structs, then checks each condition (field, operator, value type, regex) and compiles it to
a closure. Any error raises :class:`PolicyError` naming ``file:line`` and the rule at fault.
Regexes are compiled with google-re2, so matching is linear-time whatever the pattern.

:class:`PolicyStore` holds the active :class:`PolicySet` and swaps it when the file changes; a bad
new file is logged and the previous rules stay active.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
import re2
import yaml

from addon.pii import Finding
from addon.providers.base import RequestInfo

__all__ = [
    "FIELDS",
    "OPERATORS",
    "RISK_LEVELS",
    "BlockVerdict",
    "Condition",
    "Decision",
    "PolicyContext",
    "PolicyError",
    "PolicySet",
    "PolicyStore",
    "Rule",
    "load_policy_file",
    "parse_policy",
    "watch",
]

log = logging.getLogger("govrix.policy")

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

Action = Literal["block", "redact", "tag", "log"]
ACTIONS: Final[frozenset[str]] = frozenset({"block", "redact", "tag", "log"})

#: Ordered risk levels; gt/gte/lt/lte on ``risk_level`` compare by this order.
RISK_LEVELS: Final[tuple[str, ...]] = ("none", "low", "medium", "high", "critical")
_RISK_RANK: Final[dict[str, int]] = {level: i for i, level in enumerate(RISK_LEVELS)}

DIRECTIONS: Final[frozenset[str]] = frozenset({"request", "response"})

# Field kinds decide which operators apply and what value each operator needs.
_STR, _NUM, _BOOL, _LIST, _LEVEL = "string", "number", "boolean", "list of strings", "risk level"

#: Every field a condition may test, with its kind.
FIELDS: Final[dict[str, str]] = {
    "agent_id": _STR,
    "agent_name": _STR,
    "model": _STR,
    "provider": _STR,
    "endpoint": _STR,
    "token_count": _NUM,
    "cost_usd": _NUM,
    "pii_detected": _BOOL,
    "pii_types": _LIST,
    "tool_name": _STR,
    "direction": _STR,
    "risk_level": _LEVEL,
}

#: Canonical operator names, and the long names accepted as aliases.
OPERATORS: Final[frozenset[str]] = frozenset(
    {"eq", "neq", "gt", "gte", "lt", "lte", "contains", "regex", "in"}
)
_OP_ALIASES: Final[dict[str, str]] = {
    "equals": "eq",
    "not_equals": "neq",
    "greater_than": "gt",
    "less_than": "lt",
    "matches": "regex",
}

_ORDER_OPS: Final[frozenset[str]] = frozenset({"gt", "gte", "lt", "lte"})

# Which operators each field kind supports (anything else is a configuration error).
_KIND_OPS: Final[dict[str, frozenset[str]]] = {
    _STR: frozenset({"eq", "neq", "contains", "regex", "in"}),
    _NUM: frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in"}),
    _BOOL: frozenset({"eq", "neq"}),
    _LIST: frozenset({"eq", "neq", "contains", "regex", "in"}),
    _LEVEL: frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in"}),
}

DEFAULT_COMPLIANCE_TAG: Final = "default"

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class PolicyError(Exception):
    """A policy file that cannot be used; ``str()`` reads ``path:line: message``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------------------------
# File schema (structure only; meaning is checked by the compiler below)
# --------------------------------------------------------------------------------------------

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _ConditionSpec(msgspec.Struct, forbid_unknown_fields=True):
    field: str
    op: str
    value: object


class _RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: _Name
    action: str
    # ``conditions`` is an alias of ``when``; exactly one of them must be present.
    when: list[_ConditionSpec] | None = None
    conditions: list[_ConditionSpec] | None = None
    message: str | None = None
    tag: str | None = None
    enabled: bool = True
    description: str | None = None


class _FileSpec(msgspec.Struct, forbid_unknown_fields=True):
    version: int = 1
    rules: list[_RuleSpec] | None = None


# --------------------------------------------------------------------------------------------
# Compiled rules and results
# --------------------------------------------------------------------------------------------


class Condition(msgspec.Struct, frozen=True):
    """One validated condition; ``op`` is the canonical operator name."""

    field: str
    op: str
    value: object
    line: int


class Rule(msgspec.Struct, frozen=True):
    """One validated rule as written in the file (disabled rules included)."""

    name: str
    action: Action
    conditions: tuple[Condition, ...]
    message: str | None
    tag: str | None
    enabled: bool
    line: int


class BlockVerdict(msgspec.Struct, frozen=True):
    """The first blocking rule that matched, and the message for the 403 body."""

    rule: str
    message: str


class Decision(msgspec.Struct):
    """What the rules say about one call.

    ``tags`` are in file order; the event's ``compliance_tag`` is the last one, or ``"default"``.
    """

    block: BlockVerdict | None = None
    redact: bool = False
    tags: list[str] = msgspec.field(default_factory=list)
    logs: list[str] = msgspec.field(default_factory=list)
    matched: list[str] = msgspec.field(default_factory=list)

    @property
    def compliance_tag(self) -> str:
        """The tag recorded on the event: the last tag set, else ``"default"``."""
        return self.tags[-1] if self.tags else DEFAULT_COMPLIANCE_TAG


class PolicyContext(msgspec.Struct, kw_only=True):
    """The facts a rule may test. ``None`` means unknown (a condition on it is false, but neq)."""

    agent_id: str | None = None
    agent_name: str | None = None
    model: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    token_count: int | None = None
    cost_usd: float | None = None
    pii_detected: bool | None = None
    pii_types: list[str] | None = None
    tool_name: str | None = None
    direction: str | None = None
    risk_level: str | None = None


_Getter = Callable[[str], object]
_Test = Callable[[_Getter], bool]

_BLOCK, _REDACT, _TAG, _LOG = 0, 1, 2, 3
_ACTION_CODE: Final[dict[str, int]] = {"block": _BLOCK, "redact": _REDACT, "tag": _TAG, "log": _LOG}


class PolicySet:
    """An immutable, compiled set of rules. Build with :func:`parse_policy`."""

    __slots__ = ("_compiled", "rules", "source")

    def __init__(self, rules: Sequence[Rule] = (), source: str = "<memory>") -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.source = source
        # (name, test, action code, block verdict or tag); disabled rules are not compiled.
        self._compiled: tuple[tuple[str, _Test, int, BlockVerdict | str | None], ...] = tuple(
            (r.name, _compile_rule(r), _ACTION_CODE[r.action], _action_arg(r))
            for r in self.rules
            if r.enabled
        )

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"PolicySet(source={self.source!r}, rules={len(self.rules)})"

    def evaluate(self, ctx: Mapping[str, object] | PolicyContext) -> Decision:
        """Evaluate every enabled rule, in file order, against ``ctx``."""
        get: _Getter
        if type(ctx) is dict:
            get = ctx.get
        elif isinstance(ctx, PolicyContext):
            # Every field exists on the struct, so plain getattr never raises here.
            get = functools.partial(getattr, ctx)
        else:
            get = ctx.get
        decision = Decision()
        for name, test, code, arg in self._compiled:
            if not test(get):
                continue
            decision.matched.append(name)
            if code == _BLOCK:
                if decision.block is None:
                    decision.block = arg  # type: ignore[assignment]
            elif code == _TAG:
                decision.tags.append(arg)  # type: ignore[arg-type]
            elif code == _REDACT:
                decision.redact = True
            else:
                decision.logs.append(name)
        return decision


def _action_arg(rule: Rule) -> BlockVerdict | str | None:
    if rule.action == "block":
        return BlockVerdict(rule.name, rule.message or f"blocked by policy rule {rule.name!r}")
    if rule.action == "tag":
        return rule.tag
    return None


def _always(get: _Getter) -> bool:
    return True


def _compile_rule(rule: Rule) -> _Test:
    """AND the rule's condition closures, unrolled for the common short rules."""
    tests = [_compile_condition(c) for c in rule.conditions]
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        t0, t1 = tests
        return lambda get: t0(get) and t1(get)
    all_tests = tuple(tests)

    def test_all(get: _Getter) -> bool:
        # A plain loop: all() over a generator costs a frame per rule evaluation.
        for t in all_tests:  # noqa: SIM110
            if not t(get):
                return False
        return True

    return test_all


# --------------------------------------------------------------------------------------------
# Condition closures. Each takes the context getter and never raises: a context value of an
# unexpected type makes the condition false (neq: true), like a missing one.
# --------------------------------------------------------------------------------------------


def _compile_condition(c: Condition) -> _Test:
    f, op, x = c.field, c.op, c.value
    kind = FIELDS[f]

    if kind == _LIST:
        return _compile_list_condition(f, op, x)

    if op == "eq":
        return lambda get: get(f) == x
    if op == "neq":
        return lambda get: get(f) != x
    if op == "in":
        members = frozenset(x)  # type: ignore[call-overload]

        def in_(get: _Getter) -> bool:
            try:
                return get(f) in members
            except TypeError:  # unhashable context value
                return False

        return in_
    if op == "contains":
        assert isinstance(x, str)

        def contains(get: _Getter) -> bool:
            v = get(f)
            return isinstance(v, str) and x in v

        return contains
    if op == "regex":
        matches = _regex_tester(x)

        def regex(get: _Getter) -> bool:
            v = get(f)
            return isinstance(v, str) and matches(v)

        return regex
    if kind == _LEVEL:
        return _compile_level_order(f, op, _RISK_RANK[x])  # type: ignore[index]
    return _compile_number_order(f, op, x)


def _compile_number_order(f: str, op: str, x: object) -> _Test:
    assert isinstance(x, int | float)
    bound: float = x

    # One closure per operator so the hot path does a single comparison.
    if op == "gt":

        def gt(get: _Getter) -> bool:
            v = get(f)
            return type(v) is not bool and isinstance(v, int | float) and v > bound

        return gt
    if op == "gte":

        def gte(get: _Getter) -> bool:
            v = get(f)
            return type(v) is not bool and isinstance(v, int | float) and v >= bound

        return gte
    if op == "lt":

        def lt(get: _Getter) -> bool:
            v = get(f)
            return type(v) is not bool and isinstance(v, int | float) and v < bound

        return lt

    def lte(get: _Getter) -> bool:
        v = get(f)
        return type(v) is not bool and isinstance(v, int | float) and v <= bound

    return lte


def _rank(v: object) -> int:
    # -1 for a missing/unknown level: callers test it before comparing.
    return _RISK_RANK.get(v, -1) if isinstance(v, str) else -1


def _compile_level_order(f: str, op: str, bound: int) -> _Test:
    if op == "gt":
        return lambda get: (r := _rank(get(f))) >= 0 and r > bound
    if op == "gte":
        return lambda get: (r := _rank(get(f))) >= 0 and r >= bound
    if op == "lt":
        return lambda get: (r := _rank(get(f))) >= 0 and r < bound
    return lambda get: (r := _rank(get(f))) >= 0 and r <= bound


def _as_str_set(v: object) -> frozenset[str] | None:
    if isinstance(v, list | tuple | set | frozenset):
        return frozenset(e for e in v if isinstance(e, str))
    return None


def _compile_list_condition(f: str, op: str, x: object) -> _Test:
    """Conditions on ``pii_types``: contains = membership, in = any overlap, eq = same set."""
    if op == "contains":

        def contains(get: _Getter) -> bool:
            v = get(f)
            return isinstance(v, list | tuple | set | frozenset) and x in v

        return contains
    if op == "regex":
        matches = _regex_tester(x)

        def regex(get: _Getter) -> bool:
            v = get(f)
            if not isinstance(v, list | tuple | set | frozenset):
                return False
            return any(isinstance(e, str) and matches(e) for e in v)

        return regex
    members = frozenset(x)  # type: ignore[call-overload]
    if op == "in":

        def in_(get: _Getter) -> bool:
            s = _as_str_set(get(f))
            return s is not None and not members.isdisjoint(s)

        return in_
    if op == "eq":
        return lambda get: _as_str_set(get(f)) == members
    return lambda get: _as_str_set(get(f)) != members


_RE2_OPTIONS = re2.Options()
# re2 would otherwise print every bad pattern to stderr; we report it as a PolicyError instead.
_RE2_OPTIONS.log_errors = False


# The google-re2 wrapper costs ~3 µs per search (pybind11 call plus UTF-8 offset bookkeeping),
# ten times a whole rule. The values tested (agent names, models, endpoints, tool names) repeat
# from call to call, so each regex condition memoises its verdict per value, boundedly.
_MEMO_ENTRIES: Final = 4096
_MEMO_MAX_LEN: Final = 512


def _compile_regex_str(pattern: object) -> re2._Regexp:
    assert isinstance(pattern, str)
    return re2.compile(pattern, options=_RE2_OPTIONS)


def _regex_tester(pattern: object) -> Callable[[str], bool]:
    """A re2 ``search`` returning a bool, memoised per tested string."""
    search = _compile_regex_str(pattern).search
    memo: dict[str, bool] = {}

    def matches(text: str) -> bool:
        hit = memo.get(text)
        if hit is None:
            hit = search(text) is not None
            if len(text) <= _MEMO_MAX_LEN:
                if len(memo) >= _MEMO_ENTRIES:
                    memo.clear()  # crude but bounded; refills with the live working set
                memo[text] = hit
        return hit

    return matches


# --------------------------------------------------------------------------------------------
# Parsing: YAML nodes -> plain values + a map from value path to line number
# --------------------------------------------------------------------------------------------

_Path = tuple[str | int, ...]
_MAX_NODES: Final = 200_000
_MAX_DEPTH: Final = 32


class _Located:
    """Plain Python values built from YAML nodes, remembering each value's 1-based line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[_Path, int] = {}
        self.nodes = 0

    def line_of(self, path: _Path) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: _Path, message: str) -> PolicyError:
        return PolicyError(self.source, self.line_of(path), message)

    def build(self, loader: yaml.SafeLoader, node: yaml.Node, path: _Path) -> object:
        line = node.start_mark.line + 1
        # YAML aliases can make a small file expand exponentially or refer to itself.
        self.nodes += 1
        if self.nodes > _MAX_NODES or len(path) > _MAX_DEPTH:
            raise PolicyError(
                self.source, line, "document too large or too deep (recursive YAML alias?)"
            )
        self.lines[path] = line
        if isinstance(node, yaml.MappingNode):
            out: dict[str, object] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                if not isinstance(key, str):
                    raise PolicyError(
                        self.source, key_node.start_mark.line + 1, f"key {key!r} is not a string"
                    )
                if key in out:
                    raise PolicyError(
                        self.source,
                        key_node.start_mark.line + 1,
                        f"duplicate key {key!r}{_where(path)}",
                    )
                out[key] = self.build(loader, value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(loader, item, (*path, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node)


def _where(path: _Path) -> str:
    return f" in {_dotted(path)}" if path else ""


def _dotted(path: _Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


_MSGSPEC_PATH = re.compile(r" - at `\$((?:\.[A-Za-z_]\w*|\[\d+\])*)`$")
_MSGSPEC_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def _validation_error(doc: _Located, raw: object, err: msgspec.ValidationError) -> PolicyError:
    """Map msgspec's ``$.rules[0].when[1].op`` path back to the line it came from."""
    text = str(err)
    path: _Path = ()
    m = _MSGSPEC_PATH.search(text)
    if m:
        text = text[: m.start()]
        path = tuple(
            name if name else int(index) for name, index in _MSGSPEC_STEP.findall(m.group(1))
        )
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        text = f"unknown key `{unknown.group(1)}`"
        path = (*path, unknown.group(1))
    return doc.error(path, f"{_rule_label(raw, path)}{_dotted(path) or 'top level'}: {text}")


def _rule_label(raw: object, path: _Path) -> str:
    """``rule 'name' `` for an error inside a rule that has a readable name."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(raw, dict):
        rules = raw.get("rules")
        i = path[1]
        if isinstance(rules, list) and isinstance(i, int) and isinstance(rules[i], dict):
            name = rules[i].get("name")
            if isinstance(name, str) and name:
                return f"rule {name!r}, "
    return ""


def parse_policy(text: str, source: str = "<string>") -> PolicySet:
    """Parse and compile a policy document; raise :class:`PolicyError` naming the line at fault."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark is not None else None
            raise PolicyError(source, line, f"invalid YAML: {e.problem or e}") from None
        except yaml.YAMLError as e:
            raise PolicyError(source, None, f"invalid YAML: {e}") from None
        doc = _Located(source)
        if root is None:  # empty file (or only comments): no rules
            return PolicySet((), source)
        try:
            raw = doc.build(loader, root, ())
        except yaml.YAMLError as e:  # e.g. a bad timestamp scalar
            raise PolicyError(source, None, f"invalid YAML: {e}") from None
    finally:
        loader.dispose()
    if raw is None:
        return PolicySet((), source)
    if not isinstance(raw, dict):
        raise doc.error((), "the top level must be a mapping with `version` and `rules`")
    try:
        spec = msgspec.convert(raw, _FileSpec)
    except msgspec.ValidationError as e:
        raise _validation_error(doc, raw, e) from None
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


def _check_rule(doc: _Located, path: _Path, rs: _RuleSpec) -> Rule:
    label = f"rule {rs.name!r}"
    line = doc.line_of(path) or 0
    if rs.action not in ACTIONS:
        raise doc.error(
            (*path, "action"),
            f"{label}: unknown action {rs.action!r} (expected one of block, redact, tag, log)",
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
    conditions = tuple(
        _check_condition(doc, (*path, key, j), label, cs) for j, cs in enumerate(specs)
    )
    return Rule(
        name=rs.name,
        action=rs.action,  # type: ignore[arg-type]  # checked against ACTIONS above
        conditions=conditions,
        message=rs.message,
        tag=rs.tag,
        enabled=rs.enabled,
        line=line,
    )


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def _check_condition(doc: _Located, path: _Path, label: str, cs: _ConditionSpec) -> Condition:
    """Check field, operator and value type; returns the condition with a canonical operator."""
    where = f"{label}, condition #{path[-1] + 1}"  # type: ignore[operator]
    kind = FIELDS.get(cs.field)
    if kind is None:
        raise doc.error(
            (*path, "field"),
            f"{where}: unknown field {cs.field!r} (expected one of {', '.join(FIELDS)})",
        )
    op = _OP_ALIASES.get(cs.op, cs.op)
    if op not in OPERATORS:
        names = "eq neq gt gte lt lte contains regex in"
        raise doc.error((*path, "op"), f"{where}: unknown operator {cs.op!r} (expected {names})")
    if op not in _KIND_OPS[kind]:
        raise doc.error(
            (*path, "op"),
            f"{where}: operator {cs.op!r} does not apply to {cs.field} (a {kind}); "
            f"use one of {', '.join(sorted(_KIND_OPS[kind]))}",
        )
    value = cs.value
    vpath = (*path, "value")

    def bad(expected: str) -> PolicyError:
        return doc.error(
            vpath,
            f"{where}: {cs.field} {cs.op} needs {expected}, got {_type_name(value)} {_show(value)}",
        )

    def check_scalar(v: object) -> bool:
        if kind == _NUM:
            return _is_number(v)
        if kind == _BOOL:
            return isinstance(v, bool)
        if kind == _LEVEL:
            return isinstance(v, str) and v in _RISK_RANK
        if cs.field == "direction" and op != "regex" and op != "contains":
            return isinstance(v, str) and v in DIRECTIONS
        return isinstance(v, str)

    scalar = {
        _STR: "a string" + (" (request or response)" if cs.field == "direction" else ""),
        _NUM: "a number",
        _BOOL: "true or false",
        _LIST: "a string",
        _LEVEL: f"a risk level ({', '.join(RISK_LEVELS)})",
    }[kind]

    if op == "in" or (kind == _LIST and op in ("eq", "neq")):
        if not isinstance(value, list) or (op == "in" and not value):
            raise bad(f"a non-empty list of {scalar.removeprefix('a ')}s")
        for item in value:
            if not check_scalar(item):
                raise bad(f"a list of {scalar.removeprefix('a ')}s")
        value = tuple(value)
    elif op == "regex":
        if not isinstance(value, str):
            raise bad("a regular expression string")
        try:
            _compile_regex_str(value)
        except re2.error as e:
            detail = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
            raise doc.error(
                vpath, f"{where}: bad regex {_show(value)}: {detail} (RE2 syntax)"
            ) from None
    elif kind == _LIST:  # contains
        if not isinstance(value, str):
            raise bad("a string (a PII type such as email)")
    elif not check_scalar(value):
        raise bad(scalar)
    return Condition(field=cs.field, op=op, value=value, line=doc.line_of(path) or 0)


def load_policy_file(path: str | os.PathLike[str]) -> PolicySet:
    """Read and compile a policy file; raise :class:`PolicyError` on any problem."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(source, None, f"cannot read policy file: {e}") from None
    return parse_policy(text, source)


# --------------------------------------------------------------------------------------------
# The active rule set, reloaded when the file changes
# --------------------------------------------------------------------------------------------

_Signature = tuple[int, int, int, int]  # (device, inode, size, mtime_ns)


def _signature(path: str) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyStore:
    """Holds the active :class:`PolicySet`; reloads it when the policy file changes.

    Readers take ``store.current`` once per call; a reload swaps the reference (atomic in
    CPython), so a call always sees one whole rule set.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: str | None = os.fspath(path) if path is not None else None
        self.current: PolicySet = PolicySet()
        self.generation = 0  # bumped on every successful (re)load
        self.last_error: PolicyError | None = None
        self._signature: _Signature | None = None
        self._lock = threading.Lock()

    def evaluate(self, ctx: Mapping[str, object] | PolicyContext) -> Decision:
        """Evaluate the active rules against ``ctx``."""
        return self.current.evaluate(ctx)

    def load(self, path: str | os.PathLike[str] | None = None) -> PolicySet:
        """Load ``path`` (default: the store's path) and make it active.

        Raises :class:`PolicyError` and leaves the active rules untouched when the file is bad.
        """
        if path is not None:
            self.path = os.fspath(path)
        if self.path is None:
            raise PolicyError("<none>", None, "no policy file configured")
        with self._lock:
            return self._load_locked(self.path)

    def _load_locked(self, path: str) -> PolicySet:
        # Stat before reading: a write that lands during the read changes the signature again
        # and is picked up on the next check.
        self._signature = _signature(path)
        try:
            policies = load_policy_file(path)
        except PolicyError as e:
            self.last_error = e
            raise
        self.current = policies
        self.generation += 1
        self.last_error = None
        return policies

    def maybe_reload(self) -> bool:
        """Reload if the file's inode, size or mtime changed; True when new rules became active.

        A bad or missing file is logged (once per change) and the previous rules stay active.
        """
        path = self.path
        if path is None:
            return False
        with self._lock:
            sig = _signature(path)
            if sig == self._signature:
                return False
            if sig is None:
                self._signature = None
                self.last_error = PolicyError(path, None, "policy file is missing")
                log.error("%s; keeping %d previous rules", self.last_error, len(self.current))
                return False
            try:
                policies = self._load_locked(path)
            except PolicyError as e:
                log.error(
                    "policy reload failed: %s; keeping %d previous rules", e, len(self.current)
                )
                return False
            log.info(
                "policy reloaded from %s: %d rules (generation %d)",
                path,
                len(policies),
                self.generation,
            )
            return True


async def watch(store: PolicyStore, interval: float = 1.0) -> None:
    """Check the policy file every ``interval`` seconds until cancelled.

    The stat and any reload run in a worker thread so a slow disk never stalls the proxy loop.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(store.maybe_reload)
        except Exception:  # a watcher that dies silently would freeze the rules forever
            log.exception("policy watcher error")


# --------------------------------------------------------------------------------------------
# What the proxy and the recorder hand to the rules, and keep of their answers
# --------------------------------------------------------------------------------------------


def policy_context(
    *,
    agent_id: str,
    agent_name: str,
    info: RequestInfo,
    provider: str,
    endpoint: str,
    direction: str,
    findings: list[Finding],
    tokens: int | None,
    cost: float | None,
    tool_name: str | None,
    risk_level: str | None,
) -> PolicyContext:
    return PolicyContext(
        agent_id=agent_id,
        agent_name=agent_name,
        model=info.model,
        provider=provider,
        endpoint=endpoint,
        token_count=tokens,
        cost_usd=cost,
        pii_detected=bool(findings),
        pii_types=sorted({f.type for f in findings}),
        tool_name=tool_name,
        direction=direction,
        risk_level=risk_level,
    )


def note_decision(decisions: list[dict[str, object]], phase: str, d: Decision) -> None:
    """What a policy decided, as kept in the event's ``policy_decisions``."""
    if not d.matched:
        return
    note: dict[str, object] = {"phase": phase, "matched": list(d.matched)}
    if d.block is not None:
        note["block"] = d.block.rule
    if d.tags:
        note["tags"] = list(d.tags)
    if d.logs:
        note["logs"] = list(d.logs)
    if d.redact:
        note["redact"] = True
    decisions.append(note)
