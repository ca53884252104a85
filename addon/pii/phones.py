"""Phone numbers: international and national formats, validated with ``phonenumbers`` metadata.

- ``+`` and ``00`` numbers are checked for any country (not only the configured regions): valid
  for their country, or of a length their country uses (a range not assigned yet, a fictional
  number; ``phonenumbers.is_possible_number``'s test), since a '+' or a grouped '00' number is
  written the way only phone numbers are. "(+358) ...", "+44 (0)20 ..." and "+52 (1) 55 ..." are
  read as the country code with a parenthesized trunk or mobile digit. A bare ``00`` run with no
  grouping needs a phone word (it is as often a zero-padded id).
- National formats count for the configured regions (``GOVRIX_PII_PHONE_REGIONS``, see
  :func:`configure`; the default covers North America, Europe and the largest markets elsewhere,
  ``addon.config.DEFAULT_PHONE_REGIONS``). Standing on their own: North American numbers written
  3-3-4 with phone punctuation (any ``NXX`` area code, or any area code in parentheses, dotted, or
  after a trunk ``1-``); numbers written with their trunk prefix that are valid
  (``020 7946 0958``, ``030/1234567``, ``06 12 34 56 78``), or of a possible length when the
  trunk prefix comes with a parenthesized area code or three groups (``(0116) 496 0516``,
  ``8 (912) 345-67-89``, ``02 123 45 67``); a country code in parentheses (``(351) 912345678``).
  A number valid in a region without those marks (``(11) 91234-5678`` in Brazil, ``98765 43210``
  in India, ``2345 6789`` in Denmark) needs an area code in parentheses, an extension, or a phone
  word.
- A bare digit run needs a phone word (phone, tel, call, mobile, reach, ...) shortly before it, or
  a phone noun right after it ("... is my cell"): order ids, timestamps and account numbers are
  far more common than unformatted phone numbers.
- Extensions (``x83119``, ``ext. 12``, ``#4``) belong to the match but not to the validation.

``phonenumbers.is_valid_number`` tests ten number types in a fixed order (premium rate first)
through several layers of calls: 10-25 µs. :func:`valid_number` tests the same metadata with
fixed-line and mobile first and compiled patterns cached: a few µs (tests/test_pii.py compares
the two on thousands of numbers); a possible number skips ``phonenumbers.parse``. Results are
cached by digest, since agents resend whole conversations, and no number is kept in memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneMetadata

from addon.config import DEFAULT_PHONE_REGIONS, ConfigError, phone_regions_from_env
from addon.pii.patterns import PHONE_AFTER, PHONE_CONTEXT
from addon.pii.regex import compile_raw
from addon.pii.validators import (
    DIGITS,
    WORD,
    Span,
    before,
    in_longer_number,
    keyword_after,
    keyword_before,
)

_PHONE_CONTEXT: Final = compile_raw(PHONE_CONTEXT)
_PHONE_AFTER: Final = compile_raw(PHONE_AFTER)
_EXTENSION: Final = re.compile(rb"\s?(?:x|ext\.?|extension|#)\s?[0-9]{1,6}$")
_GROUP_SPLIT: Final = re.compile(rb"[^0-9]+")
_MARKER: Final = re.compile(rb"[0-9]{1,3}\)?[ .\-]?\([0-9]\)")  # country code, then "(0)", "(1)"
# 2024-03-15, 15.03.2024, 2024/03/15: the most common phone-shaped candidates in prose.
_DATE: Final = re.compile(
    rb"(?:19|20)[0-9]{2}[-./][01][0-9][-./][0-3][0-9]"
    rb"|[0-3][0-9][-./][01][0-9][-./](?:19|20)[0-9]{2}"
)
_CACHE_SIZE: Final = 4096
_cache: dict[bytes, int] = {}
# Answers of the cached national check.
_INVALID: Final = 0
_STRONG: Final = 1  # valid and written the way only phone numbers are
_WEAK: Final = 2  # valid, but needs a parenthesized area code or a phone word
# International only: a possible length once a 0 that no number of the country starts with is
# kept ("+45 0123 4567"); a phone with a '+' before it, nothing without.
_PLUS_ONLY: Final = 3


class _Regions:
    """The configured regions, with what the national check needs from each one's metadata."""

    codes: tuple[str, ...] = ()
    nanp = False
    # Regions outside North America indexed by the lengths their numbers have, so that a
    # candidate is checked against a few regions rather than all of them:
    # national prefix -> national number length -> regions with that prefix
    trunk: dict[str, dict[int, tuple[Any, ...]]] = {}
    # number length -> (national prefix or "", metadata) of every region
    plain: dict[int, tuple[tuple[str, Any], ...]] = {}


_regions = _Regions()


def configure(regions: Iterable[str]) -> None:
    """Set the regions whose national formats are recognized (ISO 3166 codes, e.g. "GB").

    The proxy and the recorder call it with ``Settings.pii_phone_regions``; until then the
    environment's value (or the default) applies.
    """
    codes = tuple(dict.fromkeys(r.strip().upper() for r in regions if r.strip()))
    unknown = [r for r in codes if r not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ValueError(f"unknown phone regions: {', '.join(unknown)}")
    others: list[tuple[str, Any]] = []
    nanp = False
    for code in codes:
        metadata = PhoneMetadata.metadata_for_region(code, None)
        if metadata is None:
            raise ValueError(f"no phone metadata for region {code}")
        _warm(metadata)
        if metadata.country_code == 1:
            nanp = True
        else:
            others.append((metadata.national_prefix or "", metadata))
    trunk: dict[str, dict[int, list[Any]]] = {}
    plain: dict[int, list[tuple[str, Any]]] = {}
    for prefix, metadata in others:
        for length in metadata.general_desc.possible_length:
            plain.setdefault(length, []).append((prefix, metadata))
            if prefix:
                trunk.setdefault(prefix, {}).setdefault(length, []).append(metadata)
    _regions.codes, _regions.nanp = codes, nanp
    _regions.trunk = {p: {n: tuple(ms) for n, ms in by.items()} for p, by in trunk.items()}
    _regions.plain = {n: tuple(rs) for n, rs in plain.items()}
    _cache.clear()


def regions() -> tuple[str, ...]:
    """The configured regions."""
    return _regions.codes


def clear_caches() -> None:
    """Forget cached validation results (benchmarks measure the cold path with it)."""
    _cache.clear()


def _cached(kind: bytes, value: bytes, compute: Any) -> int:
    key = hashlib.blake2b(value, digest_size=16, person=kind).digest()  # never the number
    answer = _cache.get(key)
    if answer is None:
        answer = compute(value)
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()  # cheap bound; a cold cache only costs speed
        _cache[key] = answer
    return int(answer)


# --- validity from metadata ----------------------------------------------------------------------

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
_patterns: dict[str, re.Pattern[str]] = {}


def _desc_matches(nsn: str, desc: Any) -> bool:
    if desc is None or desc.national_number_pattern is None:
        return False
    if desc.possible_length and len(nsn) not in desc.possible_length:
        return False
    pattern = _patterns.get(desc.national_number_pattern)
    if pattern is None:
        pattern = _patterns[desc.national_number_pattern] = re.compile(desc.national_number_pattern)
    return pattern.fullmatch(nsn) is not None


def _warm(metadata: Any) -> None:
    """Compile a region's number patterns now rather than on the first number seen (~1 ms)."""
    for desc in (metadata.general_desc, *(getattr(metadata, kind) for kind in _NUMBER_TYPES)):
        pattern = getattr(desc, "national_number_pattern", None)
        if pattern is not None and pattern not in _patterns:
            _patterns[pattern] = re.compile(pattern)


def valid_in(nsn: str, metadata: Any) -> bool:
    """Whether ``nsn`` (national significant number) is a valid number of ``metadata``'s region."""
    if metadata is None or not _desc_matches(nsn, metadata.general_desc):
        return False
    return any(_desc_matches(nsn, getattr(metadata, kind)) for kind in _NUMBER_TYPES)


def valid_number(country_code: int, nsn: str) -> bool:
    """``phonenumbers.is_valid_number`` for a number without leading zeros, by its rules."""
    codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    if len(codes) == 1:
        return valid_in(
            nsn, PhoneMetadata.metadata_for_region_or_calling_code(country_code, codes[0])
        )
    # Shared country codes (+1, +7, +44, ...): the first region whose leading digits match, or
    # else the first region the number is valid in, decides (phonenumbers' own rule).
    for code in codes:
        metadata = PhoneMetadata.metadata_for_region(code, None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if re.match(metadata.leading_digits, nsn):
                return valid_in(nsn, metadata)
        elif valid_in(nsn, metadata):
            return True
    return False


def _possible_length(nsn: str, metadata: Any) -> bool:
    return len(nsn) in (metadata.general_desc.possible_length if metadata.general_desc else ())


def _possible(country_code: int, national: str, *, zero: bool = False) -> bool:
    """A national number of a length its country uses, its trunk prefix written or not
    (``phonenumbers.is_possible_number``'s test: ranges get assigned, lengths stay); one that
    starts with 0 only when ``zero``."""
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, code)
        if metadata is None:
            continue
        nsn = national
        prefix = metadata.national_prefix or ""
        if prefix and nsn.startswith(prefix):  # "+49 (0)30 ...", "+358 045 ..."
            nsn = nsn[len(prefix) :]
        if (zero or nsn[:1] != "0") and _possible_length(nsn, metadata):
            return True
    return False


def _international(value: bytes) -> int:
    """A number after '+' or '00' (its digits and punctuation, without the prefix).

    Valid numbers (an assigned range of their country) are strong; numbers of a length their
    country uses (a range not assigned yet, a fictional or generated number) are weak: with a '+'
    or phone punctuation they are still written the way only phone numbers are.
    """
    digits = bytes(c for c in value if c in DIGITS).decode()
    # Fast path: take the country code and national number from the digits instead of calling
    # phonenumbers.parse (which costs as much as validation). A negative answer still goes
    # through parse, which also knows trunk prefixes ("+44 (0)20 ...") and prefix rewriting.
    code, national = 0, ""
    for size in (1, 2, 3):
        if int(digits[:size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            code, national = int(digits[:size]), digits[size:]
            if national[:1] not in ("", "0") and valid_number(code, national):
                return _STRONG
            break
    if code and _possible(code, national):
        return _WEAK  # parse costs as much as validation: a possible number needs no more
    try:
        parsed = phonenumbers.parse("+" + value.decode(), None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is not None and phonenumbers.is_valid_number(parsed):
        return _STRONG
    marker = _MARKER.match(value)
    if marker is not None and code:
        # "+52 (1) 55...", "+49 (0) 30...": a trunk or mobile digit written in parentheses after
        # the country code, not dialled from abroad
        national = bytes(c for c in value[marker.end() :] if c in DIGITS).decode()
        if national[:1] not in ("", "0") and valid_number(code, national):
            return _STRONG
    if code and _possible(code, national, zero=True):
        return _PLUS_ONLY
    return _INVALID


def _national(value: bytes) -> int:
    """A number in a national format of the configured regions (see the module docstring)."""
    groups = [g for g in _GROUP_SPLIT.split(value) if g]
    digits = b"".join(groups).decode()
    answer = _INVALID
    if _regions.nanp:
        sizes = [len(g) for g in groups]
        national = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
        if sizes[0] == 1 and len(sizes) > 1:
            sizes = sizes[1:]
        shaped = sizes in ([3, 3, 4], [3, 7], [6, 4]) or b"(" in value
        if len(national) == 10 and valid_number(1, national):
            if shaped:
                return _STRONG
            answer = _WEAK
        elif shaped and len(national) == 10 and (national[0] not in "01" or value[:1] == b"("):
            # NXX-XXX-XXXX with an area code not assigned (yet); in parentheses, any area code
            return _STRONG
        elif sizes == [3, 3, 4] and value.count(b".") == 2:
            return _STRONG  # 012.345.6789: dotted 3-3-4 is phone notation only
        elif [len(g) for g in groups] == [1, 3, 3, 4] and digits[0] == "1":
            return _STRONG  # 1-XXX-XXX-XXXX: the trunk 1 and the grouping are phone notation
    parenthesized = b"(" in value
    if value[:1] == b"(" and len(groups) >= 2 and len(groups[0]) <= 3:
        # "(351) 912345678": a country code in parentheses, written without its '+'
        code = int(groups[0])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE and valid_number(
            code, digits[len(groups[0]) :]
        ):
            return _STRONG
    # "(0116) 496 0516", "8 (912) 345-67-89", "02 123 45 67": a trunk prefix with a
    # parenthesized area code or three groups is phone notation, so a length the region uses
    # is enough (the index holds only regions where it is).
    notation = parenthesized or len(groups) >= 3
    for prefix, by_length in _regions.trunk.items():
        if digits.startswith(prefix):
            nsn = digits[len(prefix) :]
            for metadata in by_length.get(len(nsn), ()):
                if (notation and nsn[:1] != "0") or valid_in(nsn, metadata):
                    return _STRONG
    if answer == _INVALID:
        for prefix, metadata in _regions.plain.get(len(digits), ()):
            if not (prefix and digits.startswith(prefix)) and valid_in(digits, metadata):
                return _WEAK
    return answer


def _without_extension(value: bytes) -> bytes:
    ext = _EXTENSION.search(value)
    return value[: ext.start()] if ext is not None else value


def _written_as_intl(buf: bytes, start: int, stop: int, prefix: int) -> bool:
    """A '+' number, or a '00' number in digit groups (a bare 00... run may be a padded id)."""
    if prefix == 1:
        return True
    value = buf[start:stop]
    return any(sep in value for sep in (b" ", b"-", b".", b"("))


def valid_phone_intl(buf: bytes, start: int, end: int) -> Span | None:
    # "ZIP+4 94105-1234", "C++17": a '+' glued to a word is not an international prefix.
    if before(buf, start) in WORD or in_longer_number(buf, start, end):
        return None
    value = _without_extension(buf[start:end])
    prefix = 1 if value[:1] == b"+" else 2
    if prefix == 2 and value.isdigit() and not _phone_word(buf, start, end):
        return None  # a bare 00... run is a zero-padded id as often as a phone number
    stop = start + len(value)
    while stop > start + prefix:
        answer = _cached(b"intl", buf[start + prefix : stop], _international)
        if (
            answer == _STRONG
            or (answer == _WEAK and _written_as_intl(buf, start, stop, prefix))
            or (answer == _PLUS_ONLY and prefix == 1)
        ):
            return start, end if stop == start + len(value) else stop
        # a neighbouring number may have been swallowed: drop the last group and retry
        cut = max(buf.rfind(sep, start + prefix, stop) for sep in (b" ", b".", b"-"))
        if cut <= start + prefix:
            return None
        stop = cut
        while stop > start and buf[stop - 1] in b" .-":
            stop -= 1
    return None


def _in_digit_groups(buf: bytes, start: int, end: int) -> bool:
    """True when more space-separated digits continue the span (an account or IBAN tail)."""
    if start >= 2 and buf[start - 1] == 0x20 and buf[start - 2] in DIGITS:
        return True
    return end + 1 < len(buf) and buf[end] == 0x20 and buf[end + 1] in DIGITS


def valid_phone_national(buf: bytes, start: int, end: int) -> Span | None:
    if before(buf, start) in (0x2B, 0x2F) or in_longer_number(buf, start, end):
        return None
    if _in_digit_groups(buf, start, end):
        return None
    value = _without_extension(buf[start:end])
    if _DATE.fullmatch(value) is not None:
        return None
    digit_count = len(value) - sum(value.count(sep) for sep in b" ()-./")
    if not 8 <= digit_count <= 13:
        return None
    answer = _cached(b"national", value, _national)
    marked = b"(" in value or len(value) < end - start  # an area code in parentheses, an extension
    if answer == _STRONG or (answer == _WEAK and (marked or _phone_word(buf, start, end))):
        return start, end
    return None


def _phone_word(buf: bytes, start: int, end: int) -> bool:
    """A phone word shortly before the number, or right after it ("... is my cell")."""
    return keyword_before(_PHONE_CONTEXT, buf, start) or keyword_after(_PHONE_AFTER, buf, end)


def valid_phone_bare(buf: bytes, start: int, end: int) -> Span | None:
    if before(buf, start) == 0x2B or in_longer_number(buf, start, end):
        return None
    if _cached(b"national", buf[start:end], _national) == _INVALID:
        return None
    return (start, end) if _phone_word(buf, start, end) else None


def _initial_regions() -> tuple[str, ...]:
    """``GOVRIX_PII_PHONE_REGIONS`` or the default; a bad value is reported by config.load()."""
    try:
        return phone_regions_from_env()
    except ConfigError:
        return DEFAULT_PHONE_REGIONS


configure(_initial_regions())
