"""PII and secret scanner for the proxy hot path (DESIGN.md §4 and §5 "PII").

One compiled RE2 alternation (``addon/pii_patterns.py``) finds candidates in a single linear pass
over the UTF-8 bytes; each candidate is then validated (Luhn, mod-97, SSN area/group/serial rules,
``phonenumbers``, ``ipaddress``, JWT header decoding, context words). Text without candidates costs
one RE2 pass and nothing else, which is the common case for prompts.

Results carry types, counts and locations only: a :class:`Finding` never holds the matched value.

Precision/recall decisions (the corpus in ``tests/data/pii_corpus.jsonl`` pins them down):

- phone: ``+`` numbers are validated for any region; national formats only as North American
  numbers (default region US) and only when written with phone punctuation (``(415) 555-2671``,
  ``415-555-2671``, ``415.555.2671``). A bare run of 10/11 digits counts only when a phone word
  (phone, tel, call, mobile, cell, fax, sms, whatsapp, contact) precedes it within 32 characters:
  order ids, timestamps and account numbers are far more common than unformatted phone numbers
  in prompts, so we trade that recall for precision.
- ssn: ``AAA-GG-SSSS`` or ``AAA GG SSSS`` with the SSA rules (area not 000, 666 or 9xx, group not
  00, serial not 0000); a bare 9-digit run only after an SSN keyword.
- credit_card: 13-19 digits, one kind of separator (space or dash), Luhn, and an issuer prefix
  whose length fits (Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Maestro).
- ipv4: four octets 0-255 without leading zeros; rejected when it is part of a longer dotted run
  (``1.2.3.4.5``) or follows a version word or marker (``v``, ``version``, ``release``, ``build``,
  ``==``, ``@``, ``Chrome/``). A bare ``1.2.3.4`` in prose is still an address.
- ipv6: ``ipaddress`` must accept it; it must contain a decimal digit and at least four hex digits,
  so ``::1``, ``::`` and C++/Rust paths such as ``add::bead`` are not reported.
- email: RFC-shaped address with an alphabetic TLD; image/code file extensions as "TLD"
  (``icon@2x.png``) are not emails. Documentation domains (example.com) *are* emails.
- secret: vendor prefixes (OpenAI, Anthropic, AWS, GitHub, Slack, Google, Stripe), JWTs whose
  header decodes to a JSON object with ``alg``, and PEM/OpenSSH/PGP private key blocks. Bare
  ``sk-`` keys need a digit, an upper- and a lower-case letter in a body of 20+ characters.

Cost (scripts/bench_pii.py): ~10 µs for a clean 4 KB prompt, ~100 µs for 64 KB; each value found
adds a few µs (phone validity results are cached by digest, since agents resend whole
conversations). For streams, feed one network chunk at a time rather than one SSE event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, NamedTuple

import msgspec
import phonenumbers
import re2
from phonenumbers import PhoneMetadata
from stdnum import iban as stdnum_iban
from stdnum import luhn

from addon.pii_patterns import (
    DETECTORS,
    PHONE_CONTEXT,
    PII_TYPES,
    SSN_CONTEXT,
    VERSION_CONTEXT,
)

__all__ = [
    "PII_TYPES",
    "Finding",
    "Match",
    "StreamScanner",
    "clear_caches",
    "json_segments",
    "redact_json",
    "redact_text",
    "scan_segments",
    "scan_text",
]


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


# --- compiled engine -----------------------------------------------------------------------------

_OPTIONS: Final = re2.Options()
_OPTIONS.max_mem = 64 << 20  # the combined DFA is larger than RE2's 8 MiB default budget
_DETECTOR_NAMES: Final = tuple(name for name, _ in DETECTORS)


def _compile_raw(pattern: str) -> Any:
    """Compile with google-re2's pybind11 core (``re2._re2``) rather than its Python wrapper.

    The wrapper's search builds a generator and a match object per call (~4 µs); the core's
    ``Match`` returns the group spans directly (~1 µs + scanning). The core is what the wrapper
    itself calls, so it exists as long as google-re2 does.
    """
    compiled = re2._re2.RE2(pattern.encode(), _OPTIONS)
    if not compiled.ok():
        raise re2.error(compiled.error())
    return compiled


# One alternation, one capturing group per detector (the patterns themselves capture nothing).
_COMBINED: Final = _compile_raw("|".join(f"({pattern})" for _, pattern in DETECTORS))
# Single-detector regexes, used only to retry later detectors at an offset whose first candidate
# failed validation (rare, so their cost does not matter).
_SINGLE: Final = tuple(_compile_raw(pattern) for _, pattern in DETECTORS)
_UNANCHORED: Final = re2._re2.RE2.Anchor.UNANCHORED
_ANCHOR_START: Final = re2._re2.RE2.Anchor.ANCHOR_START
_SSN_CONTEXT: Final = re2.compile(SSN_CONTEXT.encode())
_PHONE_CONTEXT: Final = re2.compile(PHONE_CONTEXT.encode())
_VERSION_CONTEXT: Final = re2.compile(VERSION_CONTEXT.encode())

if _COMBINED.NumberOfCapturingGroups() != len(DETECTORS):  # group i+1 must be detector i
    raise RuntimeError("a pattern in addon/pii_patterns.py has a capturing group")

_CONTEXT_WINDOW: Final = 32  # bytes looked at before a bare number for a keyword
_DIGITS: Final = frozenset(b"0123456789")
_WORD: Final = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_HEX: Final = frozenset(b"0123456789ABCDEFabcdef")
# File extensions that show up after an '@' in asset names (icon@2x.png) but are not mail TLDs.
_FILE_EXTENSION_NAMES: Final = (
    "png jpg jpeg gif svg webp bmp ico tif tiff avif js mjs cjs ts tsx jsx css scss less json yaml "
    "yml toml lock txt html htm xml pdf map wasm"
)
_FILE_EXTENSIONS: Final = frozenset(_FILE_EXTENSION_NAMES.split())


# --- validators ----------------------------------------------------------------------------------
# Each takes the scanned bytes and a candidate span and returns the (possibly shortened) end of a
# valid match, or -1. Spans are byte offsets into the UTF-8 text.


def _before(buf: bytes, start: int) -> int:
    """The byte before ``start`` or -1."""
    return buf[start - 1] if start > 0 else -1


def _after(buf: bytes, end: int) -> int:
    """The byte at ``end`` or -1."""
    return buf[end] if end < len(buf) else -1


def _in_longer_number(buf: bytes, start: int, end: int) -> bool:
    """True when the span is glued to more digits by '-' or '.' (ids, UUID parts, decimals)."""
    if start >= 2 and buf[start - 1] in b"-." and buf[start - 2] in _DIGITS:
        return True
    return end + 1 < len(buf) and buf[end] in b"-." and buf[end + 1] in _DIGITS


def _keyword_before(pattern: Any, buf: bytes, start: int) -> bool:
    """True when ``pattern`` occurs shortly before ``start`` with no other number in between.

    Cutting the window at the previous digit keeps "call 415... order 415..." from lending the
    first number's keyword to the second.
    """
    lo = max(0, start - _CONTEXT_WINDOW)
    for i in range(start - 1, lo - 1, -1):
        if buf[i] in _DIGITS:
            lo = i + 1
            break
    return pattern.search(buf[lo:start]) is not None


def _valid_secret(buf: bytes, start: int, end: int) -> int:
    value = buf[start:end]
    if value.startswith(b"eyJ"):
        return end if _is_jwt(value) else -1
    if value.startswith(b"sk-") and not value.startswith(b"sk-ant-"):
        body = value.split(b"-", 1)[1]
        has_digit = any(c in _DIGITS for c in body)
        has_upper = any(65 <= c <= 90 for c in body)
        has_lower = any(97 <= c <= 122 for c in body)
        return end if has_digit and has_upper and has_lower else -1
    if value.startswith(b"xox"):
        return end if any(c in _DIGITS for c in value) else -1
    return end


def _is_jwt(value: bytes) -> bool:
    header = value.split(b".", 1)[0]
    try:
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _valid_email(buf: bytes, start: int, end: int) -> int:
    value = buf[start:end]
    local, _, domain = value.partition(b"@")
    if local.startswith(b".") or local.endswith(b".") or b".." in local:
        return -1
    tld = domain.rsplit(b".", 1)[1].lower().decode()
    return -1 if tld in _FILE_EXTENSIONS else end


def _shrink(buf: bytes, start: int, end: int, check: Callable[[bytes], bool], seps: bytes) -> int:
    """Try the span, then the span without its last separated group, until ``check`` passes.

    Greedy candidates can swallow a neighbouring number ("... 0958 2024"); dropping whole trailing
    groups recovers the real value without a second regex pass.
    """
    while end > start:
        if check(buf[start:end]):
            return end
        cut = max(buf.rfind(sep, start, end) for sep in seps)
        if cut <= start:
            return -1
        end = cut
        while end > start and buf[end - 1] in seps:
            end -= 1
    return -1


def _card_ok(value: bytes) -> bool:
    has_space, has_dash = b" " in value, b"-" in value
    if has_space and has_dash:
        return False
    digits = value.replace(b" ", b"").replace(b"-", b"").decode()
    return _issuer_length_ok(digits) and luhn.is_valid(digits)


def _issuer_length_ok(d: str) -> bool:
    """Issuer prefix and length table; rejects Luhn-valid numbers no card network issues."""
    n = len(d)
    if not 13 <= n <= 19:
        return False
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # Amex
        return n == 15
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:  # Diners
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925 or p2 == 62:
        return 16 <= n <= 19  # Discover, UnionPay
    if p2 == 50 or 56 <= p2 <= 69:  # Maestro
        return n >= 13
    return False


def _valid_card(buf: bytes, start: int, end: int) -> int:
    if _before(buf, start) == 0x2B or _in_longer_number(buf, start, end):  # '+': a phone number
        return -1
    return _shrink(buf, start, end, _card_ok, b" -")


def _ssn_ok(digits: bytes) -> bool:
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def _valid_ssn(buf: bytes, start: int, end: int) -> int:
    if _in_longer_number(buf, start, end):
        return -1
    value = buf[start:end].replace(b"-", b"").replace(b" ", b"")
    return end if _ssn_ok(value) else -1


def _valid_ssn_bare(buf: bytes, start: int, end: int) -> int:
    if _in_longer_number(buf, start, end) or not _keyword_before(_SSN_CONTEXT, buf, start):
        return -1
    return end if _ssn_ok(buf[start:end]) else -1


def _valid_ipv4(buf: bytes, start: int, end: int) -> int:
    if _before(buf, start) == 0x2E or (  # '.' before: tail of a longer dotted run
        end + 1 < len(buf) and buf[end] == 0x2E and buf[end + 1] in _DIGITS
    ):
        return -1
    for octet in buf[start:end].split(b"."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == 0x30):
            return -1
    window = buf[max(0, start - _CONTEXT_WINDOW) : start]
    return -1 if _VERSION_CONTEXT.search(window) is not None else end


def _valid_ipv6(buf: bytes, start: int, end: int) -> int:
    prev, nxt = _before(buf, start), _after(buf, end)
    if prev in _WORD or prev in (0x3A, 0x2E) or nxt in _WORD or nxt == 0x3A:
        return -1
    value = buf[start:end]
    if sum(c in _HEX for c in value) < 4 or not any(c in _DIGITS for c in value):
        return -1
    try:
        ipaddress.IPv6Address(value.decode())
    except ValueError:
        return -1
    return end


def _valid_iban(buf: bytes, start: int, end: int) -> int:
    return _shrink(buf, start, end, lambda v: stdnum_iban.is_valid(v.decode()), b" ")


_PHONE_CACHE_SIZE: Final = 4096
# Validity of recently seen phone candidates, keyed by a digest so that no number is kept in
# memory. Agents resend the whole conversation on every call, so the same number recurs often,
# and phonenumbers costs 10-30 µs per check.
_phone_cache: dict[bytes, bool] = {}


def _phone_ok(value: bytes, region: str | None) -> bool:
    """``phonenumbers`` validity of a candidate: '+' numbers for any region, else ``region``."""
    key = hashlib.blake2b(value, digest_size=16, person=(region or "").encode()).digest()
    valid = _phone_cache.get(key)
    if valid is None:
        valid = _phone_valid(value, region)
        if len(_phone_cache) >= _PHONE_CACHE_SIZE:
            _phone_cache.clear()  # cheap bound; a cold cache only costs speed
        _phone_cache[key] = valid
    return valid


def clear_caches() -> None:
    """Forget cached validation results (benchmarks measure the cold path with it)."""
    _phone_cache.clear()


def _phone_valid(value: bytes, region: str | None) -> bool:
    digits = bytes(c for c in value if c in _DIGITS).decode()
    # Fast paths: take the country code and national number from the digits instead of calling
    # phonenumbers.parse (which costs as much as validation). NANP numbers are exact this way; for
    # '+' numbers a negative answer still goes through parse, which also knows trunk prefixes
    # ("+44 (0)20 ...") and national-prefix rewriting.
    if region == "US":
        national = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
        if len(national) == 10:
            return _valid_number(1, national)
    elif region is None:
        for size in (1, 2, 3):
            code = int(digits[:size])
            if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                national = digits[size:]
                if national[:1] not in ("", "0") and _valid_number(code, national):
                    return True
                break
    try:
        parsed = phonenumbers.parse(value.decode(), region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(parsed))


# --- phone validity without phonenumbers' per-call overhead --------------------------------------
# phonenumbers.is_valid_number tests ten number types in a fixed order (premium rate first) through
# several layers of calls: 10-25 µs. The same metadata, tested with fixed-line and mobile first and
# compiled patterns cached here, gives the same answer in a few µs (tests/test_pii.py compares the
# two on thousands of numbers).
_NUMBER_TYPES: Final = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
_phone_patterns: dict[str, re.Pattern[str]] = {}


def _desc_matches(nsn: str, desc: Any) -> bool:
    if desc is None or desc.national_number_pattern is None:
        return False
    if desc.possible_length and len(nsn) not in desc.possible_length:
        return False
    pattern = _phone_patterns.get(desc.national_number_pattern)
    if pattern is None:
        pattern = _phone_patterns[desc.national_number_pattern] = re.compile(
            desc.national_number_pattern
        )
    return pattern.fullmatch(nsn) is not None


def _valid_in(nsn: str, metadata: Any) -> bool:
    if metadata is None or not _desc_matches(nsn, metadata.general_desc):
        return False
    return any(_desc_matches(nsn, getattr(metadata, kind)) for kind in _NUMBER_TYPES)


def _valid_number(country_code: int, nsn: str) -> bool:
    """``phonenumbers.is_valid_number`` for a number without leading zeros, by its rules."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    if len(regions) == 1:
        return _valid_in(
            nsn, PhoneMetadata.metadata_for_region_or_calling_code(country_code, regions[0])
        )
    # Shared country codes (+1, +7, +44, ...): the first region whose leading digits match, or
    # else the first region the number is valid in, decides (phonenumbers' own rule).
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region, None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if re.match(metadata.leading_digits, nsn):
                return _valid_in(nsn, metadata)
        elif _valid_in(nsn, metadata):
            return True
    return False


def _valid_phone_intl(buf: bytes, start: int, end: int) -> int:
    # "ZIP+4 94105-1234", "C++17": a '+' glued to a word is not an international prefix.
    if _before(buf, start) in _WORD or _in_longer_number(buf, start, end):
        return -1
    return _shrink(buf, start, end, lambda v: _phone_ok(v, None), b" .-")


def _valid_phone_nanp(buf: bytes, start: int, end: int) -> int:
    if _before(buf, start) == 0x2B or _in_longer_number(buf, start, end):
        return -1
    return end if _phone_ok(buf[start:end], "US") else -1


def _valid_phone_bare(buf: bytes, start: int, end: int) -> int:
    if _before(buf, start) == 0x2B or _in_longer_number(buf, start, end):
        return -1
    if not _keyword_before(_PHONE_CONTEXT, buf, start):
        return -1
    return end if _phone_ok(buf[start:end], "US") else -1


_Validator = Callable[[bytes, int, int], int]
_VALIDATORS: Final[dict[str, tuple[str, _Validator]]] = {
    "secret": ("secret", _valid_secret),
    "email": ("email", _valid_email),
    "iban": ("iban", _valid_iban),
    "credit_card": ("credit_card", _valid_card),
    "ssn": ("ssn", _valid_ssn),
    "ssn_bare": ("ssn", _valid_ssn_bare),
    "ipv6": ("ipv6", _valid_ipv6),
    "ipv4": ("ipv4", _valid_ipv4),
    "phone_intl": ("phone", _valid_phone_intl),
    "phone_nanp": ("phone", _valid_phone_nanp),
    "phone_bare": ("phone", _valid_phone_bare),
}
# Per detector index: (reported type, validator), aligned with the combined regex's groups.
_BY_INDEX: Final = tuple(_VALIDATORS[name] for name in _DETECTOR_NAMES)


# --- scanning ------------------------------------------------------------------------------------


def _scan_bytes(buf: bytes) -> list[Match]:
    """Validated, non-overlapping matches in ``buf`` with byte offsets, in text order."""
    found: list[Match] = []
    pos, size = 0, len(buf)
    match = _COMBINED.Match
    groups = len(_BY_INDEX)
    while pos < size:
        spans = match(_UNANCHORED, buf, pos, size)
        start, cand_end = spans[0]
        if start < 0:
            break
        index = next(i for i in range(groups) if spans[i + 1][0] >= 0)
        kind, validate = _BY_INDEX[index]
        end = validate(buf, start, cand_end)
        # The first alternative at this offset failed: later detectors may still match here
        # (an "sk-..." candidate that is really the local part of an email address).
        for later in range(index + 1, groups):
            if end >= 0:
                break
            alt_start, alt_end = _SINGLE[later].Match(_ANCHOR_START, buf, start, size)[0]
            if alt_start >= 0:
                kind, validate = _BY_INDEX[later]
                end = validate(buf, start, alt_end)
        if end >= 0:
            found.append(Match(kind, start, end))
            pos = end
        else:
            pos = start + 1
    return found


def _to_char_offsets(text: str, buf: bytes, matches: list[Match]) -> list[Match]:
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


def scan_text(text: str) -> list[Match]:
    """Validated PII/secret matches in ``text`` as ``(type, start, end)``, in text order."""
    buf = text.encode("utf-8", "surrogatepass")
    return _to_char_offsets(text, buf, _scan_bytes(buf))


def scan_segments(segments: Iterable[tuple[str, str]]) -> list[Finding]:
    """Scan ``(json_path, text)`` pairs; one :class:`Finding` per (type, path), first seen first."""
    counts: dict[tuple[str, str], int] = {}
    for path, text in segments:
        for match in _scan_bytes(text.encode("utf-8", "surrogatepass")):
            key = (match.type, path)
            counts[key] = counts.get(key, 0) + 1
    return [Finding(type=kind, count=n, path=path) for (kind, path), n in counts.items()]


def redact_text(text: str) -> tuple[str, int]:
    """Replace every validated match with ``[REDACTED:<type>]``; returns (text, matches)."""
    buf = text.encode("utf-8", "surrogatepass")
    matches = _scan_bytes(buf)
    if not matches:
        return text, 0
    parts: list[bytes] = []
    last = 0
    for kind, start, end in matches:
        parts.append(buf[last:start])
        parts.append(b"[REDACTED:" + kind.encode() + b"]")
        last = end
    parts.append(buf[last:])
    return b"".join(parts).decode("utf-8", "surrogatepass"), len(matches)


def redact_json(obj: Any) -> tuple[Any, int]:
    """Redact every string value in a decoded JSON document (keys are left alone).

    Returns a new document and the number of redactions; unchanged subtrees are shared with the
    input rather than copied, and the input is never modified.
    """
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        total = 0
        new_dict: dict[Any, Any] = {}
        for key, value in obj.items():
            new_dict[key], n = redact_json(value)
            total += n
        return (new_dict, total) if total else (obj, 0)
    if isinstance(obj, list):
        total = 0
        new_list: list[Any] = []
        for value in obj:
            redacted, n = redact_json(value)
            new_list.append(redacted)
            total += n
        return (new_list, total) if total else (obj, 0)
    return obj, 0


def _child_path(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{msgspec.json.encode(key).decode()}]"


def json_segments(obj: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """Every string value in a decoded JSON document with its JSON path, for :func:`scan_segments`.

    Paths look like ``$.messages[0].content``; keys that are not identifiers are quoted
    (``$["x-key"]``).
    """
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from json_segments(value, _child_path(path, str(key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from json_segments(value, f"{path}[{i}]")


# --- streaming -----------------------------------------------------------------------------------


# Characters that never occur inside a long PII value (JWT, key, email), so the text after the last
# one is the only token that may still be growing.
_SEPARATORS: Final = " \n\t\"',;<>(){}[]"


def _last_separator(buf: str, stable: int) -> int:
    """Index of the last separator in ``buf`` (-1 if none); only positions < ``stable`` matter."""
    stable = max(stable, 0)
    if any(buf.find(sep, stable) >= 0 for sep in _SEPARATORS):
        return len(buf)  # a separator after the stable point: nothing long is still open
    return max(buf.rfind(sep, 0, stable) for sep in _SEPARATORS)


class StreamScanner:
    """Counts PII in text that arrives in small deltas (streamed LLM responses).

    A value split across deltas is found once. Only a bounded window is kept: the last ``hold``
    characters (a match ending there may still grow, so it is not counted yet), ``context``
    characters before them for look-behind rules, and at most ``max_pending`` characters of an
    unfinished token (JWTs and key blocks are long). Text is rescanned once ``scan_every`` new
    characters have arrived, so per-delta cost is an append.
    """

    __slots__ = (
        "_base",
        "_buf",
        "_committed_end",
        "_context",
        "_counts",
        "_floor",
        "_hold",
        "_max_pending",
        "_parts",
        "_scan_every",
        "_unscanned",
    )

    def __init__(
        self,
        *,
        hold: int = 128,
        context: int = 64,
        scan_every: int = 1024,
        max_pending: int = 16384,
    ) -> None:
        self._hold = hold
        self._context = context
        self._scan_every = scan_every
        self._max_pending = max_pending
        self._parts: list[str] = []
        self._buf = ""
        self._base = 0  # absolute offset of _buf[0] in the whole stream
        self._floor = 0  # matches starting before this offset were already decided
        self._committed_end = 0  # end of the last counted match
        self._unscanned = 0
        self._counts: dict[str, int] = {}

    @property
    def buffered_chars(self) -> int:
        """Characters currently held in memory (for tests and metrics)."""
        return len(self._buf) + sum(len(part) for part in self._parts)

    def feed(self, text_delta: str) -> None:
        """Add the next piece of streamed text."""
        if not text_delta:
            return
        self._parts.append(text_delta)
        self._unscanned += len(text_delta)
        if self._unscanned >= self._scan_every:
            self._scan()

    def findings(self, path: str) -> list[Finding]:
        """Findings so far, including matches at the very end of the text received so far.

        Calling it does not end the stream: matches still open at the end are counted here but
        not committed, so later deltas that extend them are not counted twice.
        """
        counts = dict(self._counts)
        for kind in self._scan_window(final=True):
            counts[kind] = counts.get(kind, 0) + 1
        return [Finding(type=kind, count=n, path=path) for kind, n in sorted(counts.items())]

    def _take_parts(self) -> None:
        if self._parts:
            self._buf += "".join(self._parts)
            self._parts.clear()

    def _scan_window(self, *, final: bool) -> list[str]:
        """Types of the undecided matches in the window; commits the stable ones unless final."""
        self._take_parts()
        base, buf = self._base, self._buf
        total = base + len(buf)
        stable_before = total - self._hold
        lowest = max(self._floor, self._committed_end)
        pending_start = -1
        open_kinds: list[str] = []
        committed_end = self._committed_end
        for kind, start, end in scan_text(buf):
            start, end = base + start, base + end
            if start < lowest or start < committed_end:
                continue
            if final:
                open_kinds.append(kind)
            elif end <= stable_before:
                self._counts[kind] = self._counts.get(kind, 0) + 1
                committed_end = end
            elif pending_start < 0:
                pending_start = start
        if final:
            return open_kinds
        self._committed_end = committed_end
        # Decide everything that can no longer change: up to `hold` before the end, but never
        # past the start of the trailing token (a JWT or email still arriving) or of an open match.
        floor = min(stable_before, base + _last_separator(buf, stable_before - base) + 1)
        if pending_start >= 0:
            floor = min(floor, pending_start)
        floor = max(floor, total - self._max_pending, self._floor)
        self._floor = floor
        keep_from = max(floor - self._context, base)
        self._buf = buf[keep_from - base :]
        self._base = keep_from
        return open_kinds

    def _scan(self) -> None:
        self._scan_window(final=False)
        self._unscanned = 0
