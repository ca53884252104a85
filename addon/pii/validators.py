"""Validators for candidates of the single RE2 pass (phones are in ``phones.py``).

Each takes the scanned bytes and a candidate span and returns the span of a valid match (possibly
shortened), or None. Spans are byte offsets into the UTF-8 text. They run only on candidates, so
they may cost a few µs, but the common rejections come first and cost a byte comparison.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Final

from addon.pii.patterns import CARD_CONTEXT, OID_PREFIX, SSN_CONTEXT, VERSION_CONTEXT
from addon.pii.regex import UNANCHORED, compile_raw

Span = tuple[int, int]

CONTEXT_WINDOW: Final = 32  # bytes looked at before a bare number for a keyword
ID_CONTEXT_WINDOW: Final = 80  # the same for SSNs and card numbers (keyword_near)
DIGITS: Final = frozenset(b"0123456789")
WORD: Final = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
# A digit or NUL (the leaf separator of documents.py) ends the look-behind for a keyword.
_CONTEXT_STOPS: Final = DIGITS | {0}
_HEX: Final = frozenset(b"0123456789ABCDEFabcdef")
_HEX_BYTES: Final = bytes(sorted(_HEX))
_DIGIT_BYTES: Final = b"0123456789"
# Abbreviations written in lower case before a number ("fax no. ...", "tel. ...").
_ABBREVIATIONS: Final = frozenset([b"no", b"nr", b"tel", b"ph", b"num", b"mob", b"fax", b"ext"])
_SSN_CONTEXT: Final = compile_raw(SSN_CONTEXT)
_CARD_CONTEXT: Final = compile_raw(CARD_CONTEXT)
_OID_PREFIX: Final = compile_raw(OID_PREFIX)
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


def _abbreviation(word: bytes) -> bool:
    return b"." in word or (len(word) <= 4 and word[:1].isupper()) or word.lower() in _ABBREVIATIONS


def _sentence_start(buf: bytes, lo: int, start: int) -> int:
    """Where the sentence holding ``start`` begins, at ``lo`` at the earliest.

    A ". " ends a sentence unless it ends an abbreviation ("Tel. ", "Soc. Sec. No. ", "S.S.N. "):
    a capitalized word of at most four characters, one with dots inside, or a common one in
    lower case ("no.", "tel.").
    """
    stop = start
    while True:
        dot = buf.rfind(b". ", lo, stop)
        if dot < 0:
            return lo
        word = buf[max(buf.rfind(b" ", lo, dot), lo - 1) + 1 : dot]
        if not _abbreviation(word):
            return dot + 1
        stop = dot


def keyword_before(pattern: Any, buf: bytes, start: int, reach: int = CONTEXT_WINDOW) -> bool:
    """True when ``pattern`` occurs shortly before ``start`` with no other number in between.

    Cutting the window at the previous digit (or leaf) keeps "call 415... order 415..." from
    lending the first number's keyword to the second.
    """
    lo = max(0, start - reach)
    for i in range(start - 1, lo - 1, -1):
        if buf[i] in _CONTEXT_STOPS:
            lo = i + 1
            break
    lo = _sentence_start(buf, lo, start)  # nor does a keyword of an earlier sentence
    window = buf[lo:start]  # a slice, so that '$' and '\b' see its ends as the text's
    return bool(pattern.Match(UNANCHORED, window, 0, len(window))[0][0] >= 0)


def keyword_after(pattern: Any, buf: bytes, end: int) -> bool:
    """True when ``pattern`` occurs shortly after ``end`` in the same sentence, before any digit
    ("4111 1111 1111 1 is my Visa")."""
    hi = min(len(buf), end + CONTEXT_WINDOW)
    for i in range(end, hi):
        if buf[i] in _CONTEXT_STOPS:
            hi = i
            break
    stop = buf.find(b". ", end, hi)
    window = buf[end : hi if stop < 0 else stop]
    return bool(pattern.Match(UNANCHORED, window, 0, len(window))[0][0] >= 0)


def keyword_near(pattern: Any, buf: bytes, start: int, end: int) -> bool:
    """``pattern`` earlier in the sentence (or the key) before ``start``, or shortly after ``end``.

    Ids are introduced from further away than phone numbers ("the social security number we
    have on file for you is ..."), so the look-behind reaches a whole clause.
    """
    return keyword_before(pattern, buf, start, ID_CONTEXT_WINDOW) or keyword_after(
        pattern, buf, end
    )


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


# Answers of the brand table.
_NOT_A_CARD: Final = 0
_CARD: Final = 1
_CARD_IF_MARKED: Final = 2  # a card only when grouped like one or with a card word nearby


def _brand(d: bytes) -> int:
    """Issuer (IIN) ranges and the lengths each brand issues; Luhn is checked apart.

    Visa's 13-digit and Maestro's 12-15-digit numbers are real (Faker issues them too), but a
    13-digit run is as likely an EAN-13 barcode and Maestro's 50/56-69 prefixes overlap EAN's and
    UPC's country codes: those lengths count only when the number is marked as a card.
    """
    n = len(d)
    if not 12 <= n <= 19:
        return _NOT_A_CARD
    p2, p3, p4 = int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == 0x34:  # Visa
        return _CARD if n in (16, 19) else _CARD_IF_MARKED if n == 13 else _NOT_A_CARD
    if p4 in (2131, 1800):  # JCB's legacy 15-digit numbers
        return _CARD if n == 15 else _NOT_A_CARD
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return _CARD if n == 16 else _NOT_A_CARD
    if 2200 <= p4 <= 2204:  # Mir
        return _CARD if n >= 16 else _NOT_A_CARD
    if p2 in (34, 37):  # Amex
        return _CARD if n == 15 else _NOT_A_CARD
    if p2 in (36, 38, 39) or 300 <= p3 <= 305 or p4 == 3095:  # Diners
        return _CARD if n >= 14 else _NOT_A_CARD
    if p2 == 35:  # JCB (3528-3589 assigned; the rest of the 35 block is JCB's test range)
        return _CARD if n >= 16 else _NOT_A_CARD
    if p4 == 6011 or 644 <= p3 <= 649 or p2 in (62, 65):  # Discover, UnionPay
        return _CARD if n >= 16 else _NOT_A_CARD
    if p2 == 50 or 56 <= p2 <= 69:  # Maestro
        return _CARD if n >= 16 else _CARD_IF_MARKED
    if p4 == 604:  # Maestro's 0604 range
        return _CARD_IF_MARKED
    return _NOT_A_CARD


def _card_grouping(value: bytes) -> bool:
    """Grouped the way cards are printed: a first group of four, then groups of three to six
    (4-4-4-4, 4-6-5, 4-4-5, 4-3-3-3), the last possibly shorter (4-4-4-1)."""
    sizes = [len(g) for g in value.replace(b"-", b" ").split(b" ")]
    return len(sizes) >= 3 and sizes[0] == 4 and all(3 <= size <= 6 for size in sizes[1:-1])


def _luhn(d: bytes) -> bool:
    total = 0
    for i, c in enumerate(reversed(d)):
        v = c - 48
        if i & 1:
            v = v * 2 - 9 if v > 4 else v * 2
        total += v
    return total % 10 == 0


def valid_card(buf: bytes, start: int, end: int) -> Span | None:
    if before(buf, start) == 0x2B or in_longer_number(buf, start, end):  # '+': a phone number
        return None
    if start >= 2 and buf[start - 1] == 0x20 and buf[start - 2] in DIGITS:
        return None  # the tail of longer digit groups (an account number, an IBAN)
    marked: list[bool] = []  # the card word is looked for once, and only when needed

    def card_ok(value: bytes) -> bool:
        if b" " in value and b"-" in value:
            return False
        digits = value.replace(b" ", b"").replace(b"-", b"")
        brand = _brand(digits)
        if brand == _NOT_A_CARD or not _luhn(digits):
            return False
        if brand == _CARD or _card_grouping(value):
            return True
        if not marked:
            marked.append(keyword_near(_CARD_CONTEXT, buf, start, end))
        return marked[0]

    return _span(start, shrink(buf, start, end, card_ok, b" -"))


def _ssn_ok(digits: bytes) -> bool:
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def valid_ssn(buf: bytes, start: int, end: int) -> Span | None:
    if in_longer_number(buf, start, end):
        return None
    value = buf[start:end].replace(b"-", b"").replace(b" ", b"")
    return (start, end) if _ssn_ok(value) else None


def valid_ssn_bare(buf: bytes, start: int, end: int) -> Span | None:
    if in_longer_number(buf, start, end) or not _ssn_ok(buf[start:end]):
        return None
    return (start, end) if keyword_near(_SSN_CONTEXT, buf, start, end) else None


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
    value = buf[start:end]
    for octet in value.split(b"."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == 0x30):
            return None
    if value[0] in b"12" and _OID_PREFIX.Match(UNANCHORED, value, 0, len(value))[0][0] >= 0:
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
    size = len(value)
    if (
        size - len(value.translate(None, _HEX_BYTES)) < 4
        or len(value.translate(None, _DIGIT_BYTES)) == size
    ):
        return None
    return (start, end) if ipv6_parses(value.decode()) else None


def ipv6_parses(text: str) -> bool:
    """An IPv6 address as ``ipaddress.IPv6Address`` reads one (no zone id: the candidate has
    none), through the C parser: 0.3 µs against 4.7. tests/test_pii.py holds both to the same
    answers on generated text."""
    try:
        socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return False
    return True
