"""Candidate patterns for contact data, ids and addresses (secrets: ``rules.py``, ``secrets.py``).

Each detector is one RE2 pattern that finds *candidates*; the validators decide (checksums, number
plans, context). The patterns are deliberately a little loose, the validators strict: RE2 is
linear-time, the validators only run on candidates.

Patterns are matched against UTF-8 bytes. They are ASCII-only (``\\d`` and ``\\b`` are ASCII in
RE2) except the local part of an email address, which accepts any non-ASCII character so that
``léa@example.com`` is redacted whole (a Unicode letter class would multiply the compiled program
by ~80); every match still ends on an ASCII byte, and starts on a character boundary. No pattern
may capture: the engine numbers one group per detector.
"""

from __future__ import annotations

from typing import Final

# --- contact data --------------------------------------------------------------------------------
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
EMAIL: Final = (
    r"[A-Za-z0-9._%+\-\x{80}-\x{10FFFF}]{1,64}@"
    + _LABEL
    + r"(?:\."
    + _LABEL
    + r")*\.[A-Za-z]{2,24}\b"
)

# An extension glued to the number or after a marker: 415-555-9096x83119, ... ext. 12, ... #4.
_EXTENSION: Final = r"(?:[ ]?(?:x|ext\.?|extension|#)[ ]?[0-9]{1,6})?"
# International numbers: '+' or the '00' prefix, country code (or "(+358)"), up to 6 digit groups
# (E.164 allows 15 digits), an optional "(0)" trunk or area code in parentheses.
PHONE_INTL: Final = (
    r"(?:\+|\b00)[1-9][0-9]{0,2}\)?[ .\-]?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{1,5}"
    r"(?:[ .\-]?[0-9]{1,5}){1,5}" + _EXTENSION + r"\b"
)
# National formats of the configured regions: an area code in parentheses, three or more digit
# groups with phone punctuation, or two groups the second of which is long: (415) 555-2671,
# 1-415-555-2671, 020 7946 0958, 06 12 34 56 78, 030/1234567, 07700 900123, (11) 91234-5678.
# Prices and decimals (249.99) have two short groups and dates (2024-03-15) three groups ending
# in two digits, so they are not even candidates. A trunk prefix may stand before a parenthesized
# area code (1 (415) ..., 8 (495) ...), and the subscriber number after it may be one group; the
# parentheses may hold a country code without its '+' ("(351) 912345678").
PHONE_NATIONAL: Final = (
    r"(?:\b[18][ .\-]?)?(?:\([0-9]{2,5}\)[ .\-]?[0-9]{2,9}(?:[ .\-][0-9]{2,5}){0,3}"
    r"|\b[0-9]{2,5}(?:[ .\-]|/ ?)[0-9]{2,5}(?:[ .\-][0-9]{2,5}){2,3}"  # (longest first)
    r"|\b[0-9]{2,5}(?:[ .\-]|/ ?)[0-9]{2,5}[ .\-][0-9]{3,5}"  # 3 groups, the last not a day...
    r"|\b0[0-9]{1,4}(?:[ .\-]|/ ?)[0-9]{2,5}[ .\-][0-9]{2}"  # a trunk 0: "0123-456 78"
    r"|\b[0-9]{2,5}(?:[ .\-]|/ ?)[0-9]{5,8}"
    r"|\b[0-9]{4}[ .\-][0-9]{4})" + _EXTENSION + r"\b"  # 8-digit plans (DK, NO): a phone word
)
# A bare digit run is only a phone with a phone keyword shortly before it (phones.py).
PHONE_BARE: Final = r"\b[0-9]{8,13}\b"

# --- government / financial ids ------------------------------------------------------------------
SSN: Final = r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b|\b[0-9]{3} [0-9]{2} [0-9]{4}\b"
# A bare 9-digit run is only an SSN with an SSN keyword shortly before it.
SSN_BARE: Final = r"\b[0-9]{9}\b"
# 12-19 digits in groups separated by single spaces or dashes (JCB's 1800, Maestro's 0604 too);
# issuer, length and Luhn validated.
CREDIT_CARD: Final = (
    r"\b(?:[2-6](?:[0-9][ \-]?){10,17}|(?:1800|0604)[ \-]?(?:[0-9][ \-]?){7,14})[0-9]\b"
)
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

# --- context words (searched in a short window before a candidate) -------------------------------
# Keys count as context too: "customer_ssn", "social_security_number", "SSN#".
SSN_CONTEXT: Final = (
    r"(?i)(?:(?:\b|_)ssn|\bss#|\bs\.s\.n|social[ _\-]?security|\bsoc(?:ial|\.)?[ _\-]?sec\b"
    r"|(?:\b|_)i?tin\b|taxpayer)"
)
CARD_CONTEXT: Final = (
    r"(?i)(?:card|visa|master ?card|amex|american express|\bjcb|maestro|diners|discover"
    r"|unionpay|payment|credit|debit|\bcvv|\bcvc|expir|(?:\b|_)(?:cc|ccn|pan)(?:\b|_)"
    r"|tarjeta|\bkarte|\bcarte\b|cart(?:a|\x{e3})o|\bcarta\b)"
)
PHONE_CONTEXT: Final = (
    r"(?i)(?:phone|\btel\b|\btel\.|\btelephone|\bcall(?:ed|ing|s)?\b|\bcall ?back|mobile|\bcell\b"
    r"|\bfax\b|\bsms\b|\btext(?:ing)? (?:me|us|to)\b|\bsend a text|whatsapp|\bcontact|\bhandy\b"
    r"|\bportable\b|\bt\x{e9}l\x{e9}phone|\btelefon|\bcelular\b|\bdial\b|\bring\b|\bph\b|\bph\."
    r"|\breach(?:ed|able)?\b|\b(?:my|our|your|his|her|their) number\b"
    r"|\b(?:office|direct|land|main|help|hot) ?line\b)"
)
# After a number only a noun names it ("... is my cell"); verbs there start a new clause.
PHONE_AFTER: Final = (
    r"(?i)\b(?:phone|cell|cellphone|mobile|tel|telephone|fax|whatsapp|landline"
    r"|my (?:home |work |office |contact )?number)\b"
)
# Words that mark a dotted quad as a version number or an OID rather than an address; "version"
# may end a longer name (AssemblyVersion, sdk_version) and quotes or a tag may follow it.
VERSION_CONTEXT: Final = (
    r"(?i)(?:\bv|\bver\.?|version|\brelease[ds]?|\bbuild|\brev|\bupgrade[ds]?(?: to)?"
    r"|\bupdate[ds]?(?: to)?|\bbump(?:ed)?(?: to)?|\bsection|\bchapter|\bclause|\bfigure"
    r"|\boids?|\bobject[ _\-]?identifiers?|\bsnmp\w*|\bmib\b|==|>=|<=|~=|\^|~|[A-Za-z]/)"
    r"[\s:=\"'(<>_]*$"
)
# Dotted quads that are the arcs of well-known OIDs rather than addresses: the Internet subtree
# (1.3.6.1), X.500 attribute types (2.5.4.x) and certificate extensions (2.5.29.x).
OID_PREFIX: Final = r"^(?:1\.3\.6\.1$|2\.5\.(?:4|29)\.)"

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
