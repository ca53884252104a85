"""Validating secret candidates: the rules of ``rules.py``, the generic rule, placeholders.

A vendor candidate (a keyword) is checked against the rules owning that keyword, each with its
own regex (searched around the keyword), secret group, entropy, keywords and allowlists. A keyword
assignment is checked against the keyword rules that match at its start (an anchored
``RE2::Set``), else the generic rule: a secret word (``password``, ``secret``, ``token``,
``api_key``, ...) assigned a random-looking value, e.g. an AWS secret access key beside its
variable name. Placeholders (``example``, ``xxxx``, ``<your-key>``, runs of one character) and
gitleaks' global allowlist (``${VAR}``, ``true``) are never secrets.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Final

import msgspec

from addon.pii.regex import ANCHOR_START, UNANCHORED, compile_raw, compile_set
from addon.pii.rules import (
    DROPPED,
    FLAG_NAME,
    GENERIC_WORDS,
    KEYWORD_END,
    MIN_KEYWORD,
    PROSE_OPERATOR,
    RULES,
    SCHEME,
    Rule,
    by_keyword,
    candidate,
    global_allowlist,
)

__all__ = [
    "DROPPED",
    "RULES",
    "entropy",
    "entropy_at_least",
    "not_a_secret",
    "valid_assign",
    "valid_vendor",
]

_GENERIC: Final = compile_raw(
    r"(?i)(?:"
    + GENERIC_WORDS
    + r")"
    + KEYWORD_END
    + r"""[\s'"]{0,3}"""
    + PROSE_OPERATOR
    + r"""[\x60'"\s=]{0,5}"""
    + SCHEME
    + r"""([^\s'"\x60;,)\]}><]{8,200})"""
)
_FLAG: Final = compile_raw(FLAG_NAME + r"""([^\s'"\x60;,)\]}><]{8,200})""")
_WINDOW: Final = 8192  # bytes after a candidate's start that its rules may look at
_KEYWORD_REACH: Final = 256  # bytes before a match where a rule's context keyword may be
_BEFORE_KEYWORD: Final = 64  # bytes before a keyword where a rule's match may start
# Which rules may match at a candidate: the keyword found (first bytes -> keywords -> rules), or a
# set of the loosened patterns (small programs, so cheap DFA states); each rule's regex decides.


def _keyword_index() -> dict[bytes, list[tuple[bytes, tuple[int, ...]]]]:
    """First bytes of a keyword -> (keyword, indices of the vendor rules it belongs to)."""
    owners: dict[bytes, list[int]] = {}
    for index, rule in enumerate(RULES.vendor):
        if by_keyword(rule):
            for keyword in rule.keywords:
                owners.setdefault(keyword, []).append(index)
    by_head: dict[bytes, list[tuple[bytes, tuple[int, ...]]]] = {}
    for keyword, indices in owners.items():
        by_head.setdefault(keyword[:MIN_KEYWORD], []).append((keyword, tuple(indices)))
    return by_head


_BY_HEAD: Final = _keyword_index()
_SHORT: Final = tuple(i for i, r in enumerate(RULES.vendor) if not by_keyword(r))
_SHORT_SET: Final = (
    compile_set([candidate(RULES.vendor[i].pattern) for i in _SHORT]) if _SHORT else None
)
_ASSIGN_SET: Final = compile_set([candidate(r.pattern) for r in RULES.assign])
# Placeholders people paste instead of a key; a random token contains none of these by chance.
_PLACEHOLDER: Final = (
    r"(?i:example|xxxx|placeholder|your[_\-. ]?(?:api[_\-. ]?)?(?:key|token|secret)|[<>]|changeme"
    r"|change_me|dummy|redacted|sample|0{6}|1{6}|a{6}|z{6}|\*{4}|\.{4})"
)
# gitleaks' global allowlist (variable references, booleans, paths) and the placeholders: one
# search per secret.
_NOT_SECRET_PATTERN: Final = "|".join(f"(?:{p})" for p in [*global_allowlist(), _PLACEHOLDER])
_NOT_SECRET: Final = compile_raw(_NOT_SECRET_PATTERN)
# A rule's own allowlist and the global one in one program, so a secret costs one search (each
# RE2 call is ~1 µs however short the value). Few rules have one (4 of gitleaks' 8.x set).
_EXCLUDED: Final = {
    rule.id: compile_raw(f"{rule.allow}|{_NOT_SECRET_PATTERN}")
    for rule in (*RULES.vendor, *RULES.assign)
    if rule.allow is not None
}
# A word or variable name, or a name=word setting (a connection string's "Protocol=https"): not
# a secret.
_ONLY_NAME: Final = compile_raw(r"[a-zA-Z_.\-]+(?:=[a-zA-Z_.\-]*)?")


_C_LOG2_C: Final = (0.0, *(c * math.log2(c) for c in range(1, _WINDOW + 1)))


def entropy(value: bytes) -> float:
    """Shannon entropy in bits per byte: log2(n) - sum(c·log2 c)/n over the byte counts."""
    n = len(value)
    if not n or n > _WINDOW:
        return 0.0
    return math.log2(n) - sum(_C_LOG2_C[value.count(b)] for b in set(value)) / n


def entropy_at_least(value: bytes, threshold: float) -> bool:
    """``entropy(value) >= threshold``, mostly without counting bytes.

    With ``n`` bytes of ``k`` distinct values the entropy lies between log2(k) (all equally
    frequent) and the entropy of one value taking ``n-k+1`` bytes and the others one each; a
    random token clears the threshold on that lower bound, a word fails it on the upper one.
    Only in between are the bytes counted.
    """
    n = len(value)
    if not n or n > _WINDOW:
        return threshold <= 0.0
    k = len(set(value))
    if math.log2(k) < threshold:
        return False
    log_n = math.log2(n)
    lowest = log_n - _C_LOG2_C[n - k + 1] / n  # the k-1 single bytes add nothing to sum(c·log2 c)
    return lowest >= threshold or entropy(value) >= threshold


def _search(regex: Any, value: bytes) -> bool:
    return bool(regex.Match(UNANCHORED, value, 0, len(value))[0][0] >= 0)


def not_a_secret(value: bytes) -> bool:
    """A placeholder (``example``, ``xxxx``, ``<your-key>``, one repeated character) or what
    gitleaks' global allowlist excludes (``${VAR}``, ``true``, ``/usr/...``)."""
    return len(set(value)) <= 2 or _search(_NOT_SECRET, value)


def _is_jwt(value: bytes) -> bool:
    header = value.split(b".", 1)[0]
    try:
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


_DIGIT_BYTES: Final = b"0123456789"
_UPPER_BYTES: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER_BYTES: Final = b"abcdefghijklmnopqrstuvwxyz"


def _mixed_case_and_digit(value: bytes) -> bool:
    body = value.split(b"-", 1)[-1]
    n = len(body)
    return all(
        len(body.translate(None, chars)) < n for chars in (_DIGIT_BYTES, _UPPER_BYTES, _LOWER_BYTES)
    )


# Checks some rules need beyond entropy (by rule id).
_CHECKS: Final = {
    "jwt": _is_jwt,
    "jwt-any": _is_jwt,
    "openai-api-key-any": _mixed_case_and_digit,
}


def _secret_span(
    rule: Rule,
    buf: bytes,
    start: int,
    spans: list[tuple[int, int]] | None = None,
    keyword_end: int = -1,
) -> tuple[int, int] | None:
    """The secret's span when ``rule`` accepts the text at ``start``.

    ``spans``: the rule's match at ``start`` with its groups, when the caller has it already.
    ``keyword_end``: where one of the rule's keywords found at or after ``start`` ends, when the
    caller found one (the keyword check is then already done if the match covers it)."""
    if spans is None:
        spans = rule.regex.Match(ANCHOR_START, buf, start, min(len(buf), start + _WINDOW))
        if spans[0][0] < 0:
            return None
    groups = spans[1:]
    if rule.secret_group and rule.secret_group <= len(groups):
        span = groups[rule.secret_group - 1]
    else:
        span = next((g for g in groups if g[0] >= 0 and g[1] > g[0]), spans[0])
    value = buf[span[0] : span[1]]
    if not value or (rule.entropy and not entropy_at_least(value, rule.entropy)):
        return None
    # gitleaks runs a rule only where one of its keywords occurs; most keywords are the prefix
    # itself, a few are context (a bare 40-hex Sourcegraph token needs "sourcegraph" nearby).
    if rule.keywords and not (0 <= keyword_end <= spans[0][1]):
        near = buf[max(0, start - _KEYWORD_REACH) : spans[0][1]].lower()
        if not any(k in near for k in rule.keywords):
            return None
    if len(set(value)) <= 2:  # one character repeated, or two: a placeholder
        return None
    if _search(_EXCLUDED.get(rule.id, _NOT_SECRET), value):
        return None
    check = _CHECKS.get(rule.id)
    if check is not None and not check(value):
        return None
    return int(span[0]), int(span[1])


def _first_rule(
    rules: tuple[Rule, ...], pattern_set: Any, buf: bytes, start: int
) -> tuple[int, int] | None:
    window = memoryview(buf)[start : start + _WINDOW]
    for index in sorted(pattern_set.Match(window)):
        span = _secret_span(rules[index], buf, start)
        if span is not None:
            return span
    return None


def _around_keyword(rule: Rule, buf: bytes, start: int, keyword_end: int) -> tuple[int, int] | None:
    """The secret of ``rule``'s match that contains the keyword found at ``start`` (ending at
    ``keyword_end``)."""
    pos, stop = max(0, start - _BEFORE_KEYWORD), min(len(buf), start + _WINDOW)
    while pos <= start:
        # unanchored, with the groups: the match found is the one _secret_span would find
        # anchored at its start, so it is handed over rather than matched twice
        spans = rule.regex.Match(UNANCHORED, buf, pos, stop)
        match_start, match_end = spans[0]
        if match_start < 0 or match_start > start:
            return None
        if match_end > start:
            return _secret_span(rule, buf, match_start, spans, keyword_end)
        pos = max(match_end, match_start + 1)
    return None


def valid_vendor(buf: bytes, start: int, end: int) -> tuple[int, int] | None:
    """A vendor candidate: a keyword (or a short-keyword rule's match) at ``start``; the secret
    of the first rule, in file order, whose match holds it."""
    head = buf[start : start + MIN_KEYWORD].lower()
    owners: dict[int, int] = {}  # rule index -> end of its longest keyword found at start
    for keyword, rules in _BY_HEAD.get(head, ()):
        if buf[start : start + len(keyword)].lower() == keyword:
            for i in rules:
                owners[i] = max(owners.get(i, 0), start + len(keyword))
    for index in sorted(owners):
        span = _around_keyword(RULES.vendor[index], buf, start, owners[index])
        if span is not None:
            return span
    if _SHORT_SET is not None:
        window = memoryview(buf)[start : start + _WINDOW]
        for index in sorted(_SHORT_SET.Match(window)):
            span = _secret_span(RULES.vendor[_SHORT[index]], buf, start)
            if span is not None:
                return span
    return None


def generic_secret_ok(value: bytes) -> bool:
    """A value assigned to a secret word is a secret when it is random-looking, not a name."""
    if len(value) < 8 or _ONLY_NAME.Match(ANCHOR_START, value, 0, len(value))[0][1] == len(value):
        return False
    if value.isdigit() or b"://" in value or value[:1] in b"$%{(/@." or b"@" in value:
        return False
    if _classes(value) < 2 or not entropy_at_least(value, 3.0):
        return False
    return not not_a_secret(value)


def _classes(value: bytes) -> int:
    """How many of digits, upper case, lower case and other bytes ``value`` holds."""
    n = len(value)
    without_digits = len(value.translate(None, _DIGIT_BYTES))
    without_upper = len(value.translate(None, _UPPER_BYTES))
    without_lower = len(value.translate(None, _LOWER_BYTES))
    other = n - (n - without_digits) - (n - without_upper) - (n - without_lower)
    return (without_digits < n) + (without_upper < n) + (without_lower < n) + (other > 0)


def valid_assign(buf: bytes, start: int, end: int) -> tuple[int, int] | None:
    """A keyword assignment: a vendor keyword rule, else the generic rule (``word = value``, or a
    command-line option ``--word value``), decides."""
    span = _first_rule(RULES.assign, _ASSIGN_SET, buf, start)
    if span is not None:
        return span
    stop = min(len(buf), start + 512)
    spans = _GENERIC.Match(ANCHOR_START, buf, start, stop)
    if spans[0][0] < 0:
        spans = _FLAG.Match(ANCHOR_START, buf, start, stop)
        if spans[0][0] < 0:
            return None
    value_start, value_end = spans[1]
    value = buf[value_start:value_end].rstrip(b".")
    return (value_start, value_start + len(value)) if generic_secret_ok(value) else None
