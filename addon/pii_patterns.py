"""Candidate patterns for the PII scanner (see ``addon/pii.py``).

Each detector is one RE2 pattern that finds *candidates*; ``pii.py`` validates every candidate
(checksums, number plans, context) before it becomes a match. The patterns are deliberately a
little loose, the validators strict: RE2 is linear-time, the validators only run on candidates.

Patterns are matched against UTF-8 bytes. They are ASCII-only (``\\d`` and ``\\b`` are ASCII in
RE2) except the local part of an email address, which accepts any non-ASCII character so that
``léa@example.com`` is redacted whole (a Unicode letter class would multiply the compiled program
by ~80); every match still ends on an ASCII byte, and starts on a character boundary.
"""

from __future__ import annotations

from typing import Final

# --- secrets -------------------------------------------------------------------------------------
# Prefixes are public and documented by each vendor; the bodies are validated for entropy-ish shape
# in pii.py where the prefix alone is ambiguous (``sk-``).
_SECRET_ALTERNATIVES: Final = (
    # Anthropic: sk-ant-api03-..., sk-ant-admin01-...
    r"\bsk-ant-[A-Za-z0-9_\-]{20,}",
    # OpenAI: legacy sk-<48>, project sk-proj-..., service accounts sk-svcacct-..., admin keys.
    r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}",
    # AWS access key ids (long-term AKIA, temporary ASIA, plus ABIA/ACCA).
    r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    # GitHub classic tokens (36 base62 chars) and fine-grained PATs.
    r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
    # Slack bot/user/app/refresh/service tokens.
    r"\bxox[bpars]-[A-Za-z0-9\-]{10,}",
    # JWT: three base64url parts; the header is decoded and checked in pii.py.
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",
    # PEM / OpenSSH / PGP private key blocks: the header alone is enough to flag; the body up to
    # the END line is included when present so redaction removes the whole block.
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[A-Za-z0-9+/=\s:,.\\\-]*?-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
    # Google API keys.
    r"\bAIza[0-9A-Za-z_\-]{35}",
    # Stripe secret and restricted keys (live and test).
    r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b",
)

SECRET: Final = "(?:" + "|".join(_SECRET_ALTERNATIVES) + ")"

# --- contact data --------------------------------------------------------------------------------
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
EMAIL: Final = (
    r"[A-Za-z0-9._%+\-\x{80}-\x{10FFFF}]{1,64}@"
    + _LABEL
    + r"(?:\."
    + _LABEL
    + r")*\.[A-Za-z]{2,24}\b"
)

# International numbers: '+' then country code then up to 6 digit groups (E.164 allows 15 digits).
PHONE_INTL: Final = (
    r"\+[1-9][0-9]{0,2}[ .\-]?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{1,5}(?:[ .\-]?[0-9]{1,5}){1,5}\b"
)
# North American national formats: (415) 555-2671, 415-555-2671, 415.555.2671, 1-415-555-2671.
PHONE_NANP: Final = (
    r"(?:\b1[ .\-]?)?(?:\([0-9]{3}\)[ .\-]?|\b[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}\b"
)
# A bare 10/11-digit run is only a phone with a phone keyword shortly before it (see pii.py).
PHONE_BARE: Final = r"\b1?[0-9]{10}\b"

# --- government / financial ids ------------------------------------------------------------------
SSN: Final = r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b|\b[0-9]{3} [0-9]{2} [0-9]{4}\b"
# A bare 9-digit run is only an SSN with an SSN keyword shortly before it (see pii.py).
SSN_BARE: Final = r"\b[0-9]{9}\b"
# 13-19 digits in groups separated by single spaces or dashes; digit count and Luhn in pii.py.
CREDIT_CARD: Final = r"\b[2-6](?:[0-9][ \-]?){11,17}[0-9]\b"
# Country code, check digits, then 11-30 alphanumerics, optionally in groups of four.
IBAN: Final = r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"

# --- network -------------------------------------------------------------------------------------
IPV4: Final = r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b"
# Loose on purpose: hex groups with two or more colons, optionally ending in a dotted quad; the
# ipaddress module validates. It starts at a word boundary or at "::" so that a failed candidate
# (a clock time such as 12:30:45) is not retried at every following offset.
_V4_TAIL: Final = r"(?:\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})?"
IPV6: Final = (
    r"(?:\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,8}"
    + _V4_TAIL
    + r"|::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){0,6}"
    + _V4_TAIL
    + ")"
)

# Detector name -> pattern. They are joined, in this order, into one alternation; RE2 picks the
# leftmost match and, at the same offset, the first alternative in this order. When that candidate
# fails validation, pii.py tries the later detectors at the same offset before moving on.
DETECTORS: Final[tuple[tuple[str, str], ...]] = (
    ("secret", SECRET),
    ("email", EMAIL),
    ("iban", IBAN),
    ("credit_card", CREDIT_CARD),
    ("ssn", SSN),
    ("ssn_bare", SSN_BARE),
    ("ipv6", IPV6),
    ("ipv4", IPV4),
    ("phone_intl", PHONE_INTL),
    ("phone_nanp", PHONE_NANP),
    ("phone_bare", PHONE_BARE),
)

# Keywords that make a bare digit run an SSN / phone number (searched in a short window before it).
SSN_CONTEXT: Final = r"(?i)(?:\bssn|\bss#|social security|\bsocial sec\b|\btin\b|taxpayer id)"
PHONE_CONTEXT: Final = (
    r"(?i)(?:\bphone|\btel\b|\btel\.|\btelephone|\bcall\b|\bcall me|\bmobile|\bcell\b|\bfax\b"
    r"|\bsms\b|\btext me|\bwhatsapp|\bcontact)"
)
# Words that mark a dotted quad as a version number rather than an address.
VERSION_CONTEXT: Final = (
    r"(?i)(?:\bv|\bver\.?|\bversion|\brelease[ds]?|\bbuild|\brev|\bupgrade[ds]?(?: to)?"
    r"|\bupdate[ds]?(?: to)?|\bbump(?:ed)?(?: to)?|\bsection|\bchapter|\bclause|\bfigure"
    r"|==|>=|<=|~=|\^|~|[A-Za-z]/)[\s:=]*$"
)

# Every type name the scanner can report (the `pii_types` vocabulary).
PII_TYPES: Final = (
    "email",
    "phone",
    "ssn",
    "credit_card",
    "ipv4",
    "ipv6",
    "iban",
    "secret",
)
