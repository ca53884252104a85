"""The single RE2 pass: one alternation of every detector, then the candidate's validator.

RE2 picks the leftmost candidate and, at one offset, the first detector in ``DETECTORS`` order;
when that candidate fails validation, the later detectors are tried at the same offset before
the scan moves on. Text without candidates costs one RE2 pass and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

import msgspec

from addon.pii import patterns, phones, secrets, validators
from addon.pii.regex import ANCHOR_START, UNANCHORED, compile_raw, compile_set


class Finding(msgspec.Struct, frozen=True):
    """How often one PII type occurred at one JSON path. Never carries the value."""

    type: str
    count: int
    path: str


class Match(NamedTuple):
    """A validated match: its type and its span in the scanned text (for redaction only)."""

    type: str
    start: int
    end: int


Validator = Callable[[bytes, int, int], "tuple[int, int] | None"]

# (detector name, reported type, candidate pattern, validator), in priority order.
_DETECTORS: Final[tuple[tuple[str, str, str, Validator], ...]] = (
    ("secret", "secret", secrets.RULES.vendor_pattern, secrets.valid_vendor),
    ("secret_assign", "secret", secrets.RULES.assign_pattern, secrets.valid_assign),
    ("email", "email", patterns.EMAIL, validators.valid_email),
    ("iban", "iban", patterns.IBAN, validators.valid_iban),
    ("credit_card", "credit_card", patterns.CREDIT_CARD, validators.valid_card),
    ("ssn", "ssn", patterns.SSN, validators.valid_ssn),
    ("ssn_bare", "ssn", patterns.SSN_BARE, validators.valid_ssn_bare),
    ("ipv6", "ipv6", patterns.IPV6, validators.valid_ipv6),
    ("ipv4", "ipv4", patterns.IPV4, validators.valid_ipv4),
    ("phone_intl", "phone", patterns.PHONE_INTL, phones.valid_phone_intl),
    ("phone_national", "phone", patterns.PHONE_NATIONAL, phones.valid_phone_national),
    ("phone_bare", "phone", patterns.PHONE_BARE, phones.valid_phone_bare),
)
#: Detector name -> candidate pattern (benchmarks compile them their own ways).
DETECTORS: Final = tuple((name, pattern) for name, _, pattern, _ in _DETECTORS)

# The combined alternation has no capturing group on purpose: asking RE2 for group spans of a
# program this large means an NFA run over each match (~50 µs); the overall span alone is two
# DFA passes. Which detectors match at a candidate's start is then one anchored RE2::Set match,
# and each of those detectors' own regex gives its candidate span.
_COMBINED: Final = compile_raw("|".join(f"(?:{pattern})" for _, pattern in DETECTORS))
_AT_START: Final = compile_set([pattern for _, pattern in DETECTORS])
_SINGLE: Final = tuple(compile_raw(pattern) for _, pattern in DETECTORS)
_BY_INDEX: Final = tuple((kind, validate) for _, kind, _, validate in _DETECTORS)
_SET_WINDOW: Final = 8192  # bytes the set looks at; every detector matches well within it
if _COMBINED.NumberOfCapturingGroups() != 0:
    raise RuntimeError("a candidate pattern in addon/pii has a capturing group")

# JSON string escapes a scanned text may still hold (tool arguments as raw JSON text, a body
# that did not parse): "\n" glues the next value to an 'n', so '\b' would fail, and '\"' hides
# the quote a context word is followed by (Version=\"1.2.3.4\"). Each keeps its length (two
# spaces; a space and the quote), so every offset holds.
_ESCAPES: Final = ((b"\\n", b"  "), (b"\\t", b"  "), (b"\\r", b"  "), (b'\\"', b' "'))


def unescaped(buf: bytes) -> bytes:
    """``buf`` with backslash escapes of whitespace and quotes blanked out, offsets unchanged."""
    if b"\\" not in buf:
        return buf
    for escape, blank in _ESCAPES:
        buf = buf.replace(escape, blank)
    return buf


def scan_bytes(buf: bytes) -> list[Match]:
    """Validated, non-overlapping matches in ``buf`` with byte offsets, in text order."""
    buf = unescaped(buf)
    found: list[Match] = []
    pos, size = 0, len(buf)
    match = _COMBINED.Match
    view = None
    last_end = 0
    while pos < size:
        start, first_end = match(UNANCHORED, buf, pos, size)[0]
        if start < 0:
            break
        if view is None:
            view = memoryview(buf)
        # Every detector matching here, in priority order: when the first fails validation, the
        # next may still hold (an "sk-..." candidate that is really an email's local part). The
        # first one's span is the combined match's (an alternation is leftmost-first: at the
        # leftmost start, the first alternative that matches wins, with its own span), so only
        # the later ones need their own regex.
        span = None
        cand_end = first_end
        for index in sorted(_AT_START.Match(view[start : start + _SET_WINDOW])):
            if cand_end < 0:
                cand_end = _SINGLE[index].Match(ANCHOR_START, buf, start, size)[0][1]
                if cand_end < 0:
                    continue
            kind, validate = _BY_INDEX[index]
            span = validate(buf, start, cand_end)
            # a secret found by its keyword may start before it, never inside the last match
            if span is not None and span[0] >= last_end and span[1] > span[0]:
                break
            span = None
            cand_end = -1
        if span is not None:
            found.append(Match(kind, span[0], span[1]))
            last_end = span[1]
            pos = max(span[1], start + 1)
        else:
            pos = start + 1
    return found


def to_char_offsets(text: str, buf: bytes, matches: list[Match]) -> list[Match]:
    """Convert byte spans to str spans; identity for ASCII text (the common case)."""
    if not matches or len(buf) == len(text):
        return matches
    out: list[Match] = []
    last_byte = last_char = 0
    for kind, start, end in matches:
        # Match boundaries are ASCII bytes, so both offsets fall on character boundaries.
        start_char = last_char + len(buf[last_byte:start].decode("utf-8", "surrogatepass"))
        end_char = start_char + len(buf[start:end].decode("utf-8", "surrogatepass"))
        out.append(Match(kind, start_char, end_char))
        last_byte, last_char = end, end_char
    return out


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def scan_text(text: str) -> list[Match]:
    """Validated PII/secret matches in ``text`` as ``(type, start, end)``, in text order."""
    buf = encode(text)
    return to_char_offsets(text, buf, scan_bytes(buf))


def clear_caches() -> None:
    """Forget cached validation results (benchmarks measure the cold path with it)."""
    phones.clear_caches()
