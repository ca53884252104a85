"""The one condition language of policy rules and scoring rules: ``{field, op, value}``.

A pure module (no mitmproxy, no Litestar, no I/O), shared by ``addon/policy`` and
``api/scoring/rules.py``; the language is documented once, in ``docs/conditions.md``. Each caller
brings its table of fields (name -> :class:`FieldType`) and turns a :class:`ConditionError` into
its own ``file:line`` error; this module checks a condition against the table (:func:`check`) and
compiles checked conditions to plain closures (:func:`compile_all`).

A compiled test reads ``record[field]`` from a mapping that holds every field it names, ``None``
meaning unknown. It never raises: a value of an unexpected type counts as unknown. A condition on
an unknown value is false, except the negative operators (``neq``, ``not_in``, ``not_contains``),
which are exactly the negation of their positive and so true. Regexes are RE2 (google-re2):
matching is linear-time whatever the pattern, and patterns RE2 cannot run are refused at load.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import msgspec
import re2

__all__ = [
    "ALIASES",
    "KIND_OPS",
    "OPERATORS",
    "Condition",
    "ConditionError",
    "ConditionSpec",
    "FieldType",
    "Test",
    "check",
    "compile_all",
    "compile_condition",
    "compile_regex",
]

Kind = Literal["string", "number", "boolean", "list", "level"]


class FieldType(msgspec.Struct, frozen=True):
    """What a field holds: its kind and, for strings and levels, the values it can take.

    ``choices`` of a string field restrict the values ``eq``/``in`` may name (``regex`` and
    ``contains`` are free); the ``choices`` of a level field are its order, lowest first.
    """

    kind: Kind
    choices: tuple[str, ...] = ()
    name: str = ""  # how messages call the kind ("risk level"); defaults to the kind

    @property
    def label(self) -> str:
        return self.name or ("list of strings" if self.kind == "list" else self.kind)


#: Every operator, in the order the documentation lists them.
OPERATORS: Final[tuple[str, ...]] = (
    "eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "not_contains", "regex",
    "exists",
)  # fmt: skip

#: Older spellings still accepted in policy files written before the languages merged.
ALIASES: Final[dict[str, str]] = {
    "equals": "eq",
    "not_equals": "neq",
    "greater_than": "gt",
    "less_than": "lt",
    "matches": "regex",
}

_ORDER: Final = frozenset({"gt", "gte", "lt", "lte"})
_SCALAR_OPS: Final = frozenset({"eq", "neq", "in", "not_in", "exists"})

#: Which operators apply to each kind of field (anything else is refused at load).
KIND_OPS: Final[dict[str, frozenset[str]]] = {
    "string": _SCALAR_OPS | {"contains", "not_contains", "regex"},
    "number": _SCALAR_OPS | _ORDER,
    "boolean": frozenset({"eq", "neq", "exists"}),
    "list": _SCALAR_OPS | {"contains", "not_contains", "regex"},
    "level": _SCALAR_OPS | _ORDER,
}


class ConditionSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One condition as written in a file, before it is checked."""

    field: str
    op: str
    value: object


class Condition(msgspec.Struct, frozen=True):
    """One checked condition: ``op`` is canonical and list values are tuples."""

    field: str
    op: str
    value: object
    line: int = 0


class ConditionError(ValueError):
    """A condition that cannot be used; ``key`` names the part at fault (field, op or value)."""

    def __init__(self, key: Literal["field", "op", "value"], message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


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


def _expected_fields(name: str, names: Sequence[str]) -> str:
    if len(names) <= 16:
        return f"expected one of {', '.join(names)}"
    close = difflib.get_close_matches(name, names, n=3)
    return f"did you mean {' or '.join(map(repr, close))}?" if close else "see the field table"


def _scalar(ft: FieldType) -> tuple[str, str, Callable[[object], bool]]:
    """What one value of this field must be: described as one, as many, and its test."""
    kind, choices = ft.kind, ft.choices
    if kind == "number":
        return "a number", "numbers", _is_number
    if kind == "boolean":
        return "true or false", "booleans", lambda v: isinstance(v, bool)
    if not choices:
        return "a string", "strings", lambda v: isinstance(v, str)
    allowed = frozenset(choices)
    noun = ft.name or "string"
    listed = f"({', '.join(choices)})" if kind == "level" else f"({' or '.join(choices)})"
    return f"a {noun} {listed}", f"{noun}s {listed}", lambda v: isinstance(v, str) and v in allowed


def check(
    field: str, op: str, value: object, fields: Mapping[str, FieldType], line: int = 0
) -> Condition:
    """Check one condition against the field table; raise :class:`ConditionError` if unusable."""
    ft = fields.get(field)
    if ft is None:
        raise ConditionError(
            "field", f"unknown field {field!r} ({_expected_fields(field, list(fields))})"
        )
    canonical = ALIASES.get(op, op)
    if canonical not in OPERATORS:
        raise ConditionError("op", f"unknown operator {op!r} (expected {' '.join(OPERATORS)})")
    allowed = KIND_OPS[ft.kind]
    if canonical not in allowed:
        raise ConditionError(
            "op",
            f"operator {op!r} does not apply to {field} (a {ft.label}); "
            f"use one of {', '.join(o for o in OPERATORS if o in allowed)}",
        )

    def bad(expected: str) -> ConditionError:
        return ConditionError(
            "value", f"{field} {op} needs {expected}, got {_type_name(value)} {_show(value)}"
        )

    one, many, is_scalar = _scalar(ft)
    if canonical == "exists":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif canonical in ("in", "not_in") or (ft.kind == "list" and canonical in ("eq", "neq")):
        if not isinstance(value, list) or (canonical in ("in", "not_in") and not value):
            raise bad(f"a non-empty list of {many}")
        if not all(is_scalar(item) for item in value):
            raise bad(f"a list of {many}")
        value = tuple(value)
    elif canonical == "regex":
        if not isinstance(value, str):
            raise bad("a regular expression string")
        try:
            compile_regex(value)
        except re2.error as e:
            detail = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
            raise ConditionError(
                "value", f"bad regex {_show(value)}: {detail} (RE2 syntax)"
            ) from None
    elif canonical in ("contains", "not_contains"):
        if not isinstance(value, str):
            raise bad("a string" + (" (one item of the list)" if ft.kind == "list" else ""))
    elif not is_scalar(value):
        raise bad(one)
    return Condition(field=field, op=canonical, value=value, line=line)


# --------------------------------------------------------------------------------------------
# Compiling: one closure per condition, specialised by kind and operator, so evaluation does a
# single comparison and no dispatch.
# --------------------------------------------------------------------------------------------

Record = Mapping[str, Any]
Test = Callable[[Record], bool]

_RE2_OPTIONS = re2.Options()
# re2 would otherwise print every bad pattern to stderr; callers report it in their own error.
_RE2_OPTIONS.log_errors = False

# The google-re2 wrapper costs ~3 µs per search (pybind11 call plus UTF-8 offset bookkeeping),
# ten times a whole policy rule. The values tested (agent names, models, scopes, verbs) repeat
# from call to call, so each regex condition memoises its verdict per value, boundedly.
_MEMO_ENTRIES: Final = 4096
_MEMO_MAX_LEN: Final = 512


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> re2._Regexp:
    """Compile with RE2 (cached: checking and compiling a rule both ask for it).

    Raises ``re2.error`` for a pattern RE2 refuses, including one that is not valid text.
    """
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a "\ud800" escape in YAML
        raise re2.error("the pattern is not valid Unicode text (lone surrogate)") from None


def _valid_text(text: str) -> str:
    """``text`` with each lone surrogate (undecodable header bytes) replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _regex_tester(pattern: str) -> Callable[[str], bool]:
    """An RE2 ``search`` returning a bool, memoised per tested string."""
    search = compile_regex(pattern).search
    memo: dict[str, bool] = {}

    def matches(text: str) -> bool:
        hit = memo.get(text)
        if hit is None:
            try:
                hit = search(text) is not None
            except UnicodeEncodeError:  # RE2 takes UTF-8; mitmproxy keeps bad bytes as surrogates
                hit = search(_valid_text(text)) is not None
            if len(text) <= _MEMO_MAX_LEN:
                if len(memo) >= _MEMO_ENTRIES:
                    memo.clear()  # crude but bounded; refills with the live working set
                memo[text] = hit
        return hit

    return matches


_LISTS: Final = (list, tuple, set, frozenset)


def _as_str_set(v: object) -> frozenset[str] | None:
    if isinstance(v, _LISTS):
        return frozenset(e for e in v if isinstance(e, str))
    return None


def _negate(test: Test) -> Test:
    return lambda r: not test(r)


def compile_condition(c: Condition, ft: FieldType) -> Test:
    """The closure of one condition checked by :func:`check` against the same field type."""
    op = c.op
    if op == "neq" and ft.kind != "list":
        f, x = c.field, c.value
        return lambda r: r[f] != x  # the common negation, without a second call
    if op == "neq":
        return _negate(compile_condition(Condition(c.field, "eq", c.value), ft))
    if op in ("not_in", "not_contains"):
        return _negate(compile_condition(Condition(c.field, op[4:], c.value), ft))
    f, x = c.field, c.value
    if op == "exists":
        if x:
            return lambda r: r[f] is not None
        return lambda r: r[f] is None
    if ft.kind == "list":
        return _compile_list(f, op, x)
    if op == "eq":
        return lambda r: r[f] == x
    if op == "in":
        members = frozenset(x)  # type: ignore[call-overload]

        def in_(r: Record) -> bool:
            try:
                return r[f] in members
            except TypeError:  # unhashable value
                return False

        return in_
    if op == "contains":
        assert isinstance(x, str)
        return lambda r: isinstance(v := r[f], str) and x in v
    if op == "regex":
        assert isinstance(x, str)
        matches = _regex_tester(x)
        return lambda r: isinstance(v := r[f], str) and matches(v)
    if ft.kind == "level":
        return _compile_level_order(f, op, ft.choices.index(x), ft.choices)
    assert isinstance(x, int | float)
    return _compile_number_order(f, op, x)


def _compile_number_order(f: str, op: str, bound: float) -> Test:
    # One closure per operator so the hot path does a single comparison.
    if op == "gt":
        return lambda r: type(v := r[f]) is not bool and isinstance(v, int | float) and v > bound
    if op == "gte":
        return lambda r: type(v := r[f]) is not bool and isinstance(v, int | float) and v >= bound
    if op == "lt":
        return lambda r: type(v := r[f]) is not bool and isinstance(v, int | float) and v < bound
    return lambda r: type(v := r[f]) is not bool and isinstance(v, int | float) and v <= bound


def _compile_level_order(f: str, op: str, bound: int, order: tuple[str, ...]) -> Test:
    # An unknown or misspelt level ranks -1, below every bound, and is tested for first.
    rank = {level: i for i, level in enumerate(order)}.get
    if op == "gt":
        return lambda r: isinstance(v := r[f], str) and rank(v, -1) > bound
    if op == "gte":
        return lambda r: isinstance(v := r[f], str) and rank(v, -1) >= bound
    if op == "lt":
        return lambda r: isinstance(v := r[f], str) and -1 < rank(v, -1) < bound
    return lambda r: isinstance(v := r[f], str) and -1 < rank(v, -1) <= bound


def _compile_list(f: str, op: str, x: object) -> Test:
    """A list field: contains = has the item, regex/in = any item matches, eq = same set."""
    if op == "contains":
        return lambda r: isinstance(v := r[f], _LISTS) and x in v
    if op == "regex":
        assert isinstance(x, str)
        matches = _regex_tester(x)

        def regex(r: Record) -> bool:
            v = r[f]
            if not isinstance(v, _LISTS):
                return False
            for e in v:  # noqa: SIM110  (a loop: any() costs a generator frame per call)
                if isinstance(e, str) and matches(e):
                    return True
            return False

        return regex
    members = frozenset(x)  # type: ignore[call-overload]
    if op == "in":
        return lambda r: (s := _as_str_set(r[f])) is not None and not members.isdisjoint(s)
    return lambda r: _as_str_set(r[f]) == members


def _always(r: Record) -> bool:
    return True


def compile_all(conditions: Iterable[Condition], fields: Mapping[str, FieldType]) -> Test:
    """AND the closures of ``conditions``, unrolled for the common short rules."""
    tests = [compile_condition(c, fields[c.field]) for c in conditions]
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        t0, t1 = tests
        return lambda r: t0(r) and t1(r)
    if len(tests) == 3:
        t0, t1, t2 = tests
        return lambda r: t0(r) and t1(r) and t2(r)
    all_tests = tuple(tests)

    def test_all(r: Record) -> bool:
        # A plain loop: all() over a generator costs a frame per evaluation.
        for t in all_tests:  # noqa: SIM110
            if not t(r):
                return False
        return True

    return test_all
