"""Validators for candidates of the single RE2 pass (phones are in ``phones.py``).

Each takes the scanned bytes and a candidate span and returns the span of a valid match (possibly
shortened), or None. Spans are byte offsets into the UTF-8 text. They run only on candidates, so
they may cost a few µs, but the common rejections come first and cost a byte comparison.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Final

from addon.pii.patterns import SSN_CONTEXT, VERSION_CONTEXT
from addon.pii.regex import UNANCHORED, compile_raw

Span = tuple[int, int]

CONTEXT_WINDOW: Final = 32  # bytes looked at before a bare number for a keyword
DIGITS: Final = frozenset(b"0123456789")
WORD: Final = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
# A digit or NUL (the leaf separator of documents.py) ends the look-behind for a keyword.
_CONTEXT_STOPS: Final = DIGITS | {0}
_HEX: Final = frozenset(b"0123456789ABCDEFabcdef")
_SSN_CONTEXT: Final = compile_raw(SSN_CONTEXT)
_VERSION_CONTEXT: Final = compile_raw(VERSION_CONTEXT)
# File extensions that show up after an '@' in asset names (icon@2x.png) but are not mail TLDs.
_FILE_EXTENSIONS: Final = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "bmp",
        "ico",
        "tif",
        "tiff",
        "avif",
        "js",
        "mjs",
        "cjs",
        "ts",
        "tsx",
        "jsx",
        "css",
        "scss",
        "less",
        "json",
        "yaml",
        "yml",
        "toml",
        "lock",
        "txt",
        "html",
        "htm",
        "xml",
        "pdf",
        "map",
        "wasm",
    ]
)


def before(buf: bytes, start: int) -> int:
    """The byte before ``start`` or -1."""
    return buf[start - 1] if start > 0 else -1


def after(buf: bytes, end: int) -> int:
    """The byte at ``end`` or -1."""
    return buf[end] if end < len(buf) else -1


def in_longer_number(buf: bytes, start: int, end: int) -> bool:
    """True when the span is glued to more digits by '-' or '.' (ids, UUID parts, decimals)."""
    if start >= 2 and buf[start - 1] in b"-." and buf[start - 2] in DIGITS:
        return True
    return end + 1 < len(buf) and buf[end] in b"-." and buf[end + 1] in DIGITS


def keyword_before(pattern: Any, buf: bytes, start: int) -> bool:
    """True when ``pattern`` occurs shortly before ``start`` with no other number in between.

    Cutting the window at the previous digit (or leaf) keeps "call 415... order 415..." from
    lending the first number's keyword to the second.
    """
    lo = max(0, start - CONTEXT_WINDOW)
    for i in range(start - 1, lo - 1, -1):
        if buf[i] in _CONTEXT_STOPS:
            lo = i + 1
            break
    lo = max(lo, buf.rfind(b". ", lo, start) + 1)  # nor does a keyword of an earlier sentence
    window = buf[lo:start]  # a slice, so that '$' and '\b' see its ends as the text's
    return bool(pattern.Match(UNANCHORED, window, 0, len(window))[0][0] >= 0)


def shrink(buf: bytes, start: int, end: int, check: Callable[[bytes], bool], seps: bytes) -> int:
    """Try the span, then the span without its last separated group, until ``check`` passes.

    Greedy candidates can swallow a neighbouring number ("... 0958 2024"); dropping whole trailing
    groups recovers the real value without a second regex pass. Returns the end or -1.
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


def _span(start: int, end: int) -> Span | None:
    return (start, end) if end >= 0 else None


# --- email ---------------------------------------------------------------------------------------


def valid_email(buf: bytes, start: int, end: int) -> Span | None:
    value = buf[start:end]
    local, _, domain = value.partition(b"@")
    if local.startswith(b".") or local.endswith(b".") or b".." in local:
        return None
    if domain.rsplit(b".", 1)[1].lower().decode() in _FILE_EXTENSIONS:
        return None
    # user@host:path (git@github.com:org/repo.git) and user@host/path are remotes and URLs.
    nxt = after(buf, end)
    if nxt == 0x2F or (nxt == 0x3A and after(buf, end + 1) not in (-1, 0x20, 0x0A, 0x09)):
        return None
    return start, end


# --- cards, SSNs, IBANs --------------------------------------------------------------------------


def _issuer_length_ok(d: bytes) -> bool:
    """Issuer prefix and length table; rejects Luhn-valid numbers no card network issues.

    No network issues 13-digit cards any more (Visa stopped), so EAN-13 barcodes, which are
    Luhn-valid one time in ten, are never cards; Maestro is held to 16-19 digits for the same
    reason (EAN prefixes 50-69 overlap its range).
    """
    n = len(d)
    if not 14 <= n <= 19:
        return False
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == 0x34:  # Visa
        return n in (16, 19)
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
        return n >= 16
    return False


def _luhn(d: bytes) -> bool:
    total = 0
    for i, c in enumerate(reversed(d)):
        v = c - 48
        if i & 1:
            v = v * 2 - 9 if v > 4 else v * 2
        total += v
    return total % 10 == 0


def _card_ok(value: bytes) -> bool:
    has_space, has_dash = b" " in value, b"-" in value
    if has_space and has_dash:
        return False
    digits = value.replace(b" ", b"").replace(b"-", b"")
    return _issuer_length_ok(digits) and _luhn(digits)


def valid_card(buf: bytes, start: int, end: int) -> Span | None:
    if before(buf, start) == 0x2B or in_longer_number(buf, start, end):  # '+': a phone number
        return None
    return _span(start, shrink(buf, start, end, _card_ok, b" -"))


def _ssn_ok(digits: bytes) -> bool:
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def valid_ssn(buf: bytes, start: int, end: int) -> Span | None:
    if in_longer_number(buf, start, end):
        return None
    value = buf[start:end].replace(b"-", b"").replace(b" ", b"")
    return (start, end) if _ssn_ok(value) else None


def valid_ssn_bare(buf: bytes, start: int, end: int) -> Span | None:
    if in_longer_number(buf, start, end) or not keyword_before(_SSN_CONTEXT, buf, start):
        return None
    return (start, end) if _ssn_ok(buf[start:end]) else None


# IBAN length per country (ISO 13616 registry); stdnum's full check costs ~25 µs a call, this
# table and one integer mod-97 cost ~1 µs.
_IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_DIGITS: Final = {c: str(int(c, 36)) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def iban_ok(value: bytes) -> bool:
    """Country length and the ISO 7064 mod-97 check of an IBAN (spaces allowed)."""
    compact = value.replace(b" ", b"").decode("ascii", "replace")
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rotated = compact[4:] + compact[:4]
    return int("".join(_IBAN_DIGITS.get(c, "x") for c in rotated)) % 97 == 1


def valid_iban(buf: bytes, start: int, end: int) -> Span | None:
    return _span(start, shrink(buf, start, end, iban_ok, b" "))


# --- addresses -----------------------------------------------------------------------------------


def valid_ipv4(buf: bytes, start: int, end: int) -> Span | None:
    if before(buf, start) == 0x2E or (  # '.' before: tail of a longer dotted run (an OID)
        end + 1 < len(buf) and buf[end] == 0x2E and buf[end + 1] in DIGITS
    ):
        return None
    for octet in buf[start:end].split(b"."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == 0x30):
            return None
    window = buf[max(0, start - CONTEXT_WINDOW) : start]
    if _VERSION_CONTEXT.Match(UNANCHORED, window, 0, len(window))[0][0] >= 0:
        return None
    return start, end


def valid_ipv6(buf: bytes, start: int, end: int) -> Span | None:
    prev, nxt = before(buf, start), after(buf, end)
    if prev in WORD or prev in (0x3A, 0x2E) or nxt in WORD or nxt == 0x3A:
        return None
    value = buf[start:end]
    if sum(c in _HEX for c in value) < 4 or not any(c in DIGITS for c in value):
        return None
    try:
        ipaddress.IPv6Address(value.decode())
    except ValueError:
        return None
    return start, end
