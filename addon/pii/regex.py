"""google-re2 compiled through its pybind11 core, shared by the engine and the rule sets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import re2

OPTIONS: Final = re2.Options()
OPTIONS.max_mem = 128 << 20  # the combined DFA is far larger than RE2's 8 MiB default budget
UNANCHORED: Final = re2._re2.RE2.Anchor.UNANCHORED
ANCHOR_START: Final = re2._re2.RE2.Anchor.ANCHOR_START


def compile_raw(pattern: str) -> Any:
    """Compile with google-re2's core (``re2._re2``) rather than its Python wrapper.

    The wrapper's search builds a generator and a match object per call (~4 µs); the core's
    ``Match`` returns the group spans directly (~1 µs + scanning). The core is what the wrapper
    itself calls, so it exists as long as google-re2 does.
    """
    compiled = re2._re2.RE2(pattern.encode(), OPTIONS)
    if not compiled.ok():
        raise re2.error(compiled.error())
    return compiled


def compile_set(patterns: list[str]) -> Any:
    """An anchored ``RE2::Set``: which of ``patterns`` match at the start of a text."""
    pattern_set = re2._re2.Set(ANCHOR_START, OPTIONS)
    for pattern in patterns:
        if pattern_set.Add(pattern.encode()) < 0:
            raise re2.error(f"cannot add {pattern[:60]!r} to a set")
    if not pattern_set.Compile():
        raise re2.error("the rule set does not compile")
    return pattern_set


def _pieces(pattern: str) -> Iterator[tuple[int, int, bool]]:
    """``pattern`` as ``(start, end, syntax)`` pieces: an escape, a POSIX class, the opening of a
    character class or one of its members, or one other character. ``syntax`` is True outside
    character classes, where groups and counted repetitions are what they seem."""
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            j = i + 2
        elif in_class and pattern.startswith("[:", i):  # a POSIX class such as [:alnum:]
            close = pattern.find(":]", i + 2)
            j = n if close < 0 else close + 2
        elif in_class:
            in_class = c != "]"
            j = i + 1
        elif c == "[":
            in_class = True
            j = i + 1
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):  # a ']' first in a class is a literal
                j += 1
        else:
            yield i, i + 1, True
            i += 1
            continue
        yield i, j, False
        i = j


def without_groups(pattern: str) -> str:
    """``pattern`` with every capturing group made non-capturing (named ones included)."""
    out: list[str] = []
    skip = 0  # a named group's opening is rewritten whole
    for start, end, syntax in _pieces(pattern):
        if start < skip:
            continue
        if syntax and pattern.startswith("(?P<", start):
            out.append("(?:")
            skip = pattern.index(">", start) + 1
        elif syntax and pattern[start] == "(" and not pattern.startswith("(?", start):
            out.append("(?:")
        else:
            out.append(pattern[start:end])
    return "".join(out)


def capped(pattern: str, limit: int = 8) -> str:
    """A looser ``pattern`` with a small program: every repetition bound above ``limit`` lowered.

    ``X{n,m}`` becomes ``X{min(n, limit),}`` when ``m`` exceeds ``limit`` (``X{250,}`` becomes
    ``X{8,}``), which matches everything the original matches, and more. RE2 unrolls a counted
    repetition into that many copies, so the rules' long bounds (``{50,1000}``, ``{109,269}``)
    made the combined program 100,000 instructions; each DFA state built for new text costs time
    in proportion. Candidates only need a superset: the rule's own regex decides.
    """
    out: list[str] = []
    skip = 0  # a counted repetition is rewritten whole
    for start, end, syntax in _pieces(pattern):
        if start < skip:
            continue
        if syntax and pattern[start] == "{":
            close = pattern.find("}", start)
            low, comma, high = (pattern[start + 1 : close] if close > 0 else "").partition(",")
            if low.isdigit() and (not high or high.isdigit()):
                lo = int(low)
                hi = int(high) if high else (None if comma else lo)
                if hi is None or hi > limit:
                    out.append(f"{{{min(lo, limit)},}}")
                else:
                    out.append(pattern[start : close + 1])
                skip = close + 1
                continue
        out.append(pattern[start:end])
    return "".join(out)
