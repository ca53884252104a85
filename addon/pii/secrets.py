"""Secret rules: gitleaks' maintained rule set plus a few of our own, and the generic rule.

``data/gitleaks.toml`` is vendored verbatim (provenance and digest in ``gitleaks.source.toml``,
licence in ``gitleaks.LICENSE``); ``data/local_rules.toml`` adds what it lacks, in the same format.
Rules become two detectors of the engine's single RE2 pass:

- ``secret``: the vendor rules with a distinctive prefix (``glpat-``, ``hf_``, ``xoxb-``, ...),
  joined without their groups. A candidate is checked against the rules that match at its start
  (an anchored ``RE2::Set``), each with its own regex, secret group, entropy and allowlists.
- ``secret_assign``: the keyword rules (``cloudflare ... = <value>``) factored into one keyword
  alternation with one shared assignment tail: 99 copies of the tail made the DFA three times
  slower. Our generic rule shares that detector: a secret word (``password``, ``secret``,
  ``token``, ``api_key``, ...) assigned a high-entropy value, e.g. an AWS secret access key beside
  its variable name. It replaces gitleaks' ``generic-api-key``, whose 1,446 stopwords and
  file-oriented allowlists do not fit prompts.

Dropped: rules without a regex (file names only) and rules scoped to file paths, which a request
body does not have (``DROPPED`` lists them with the reason). Placeholders (``example``, ``xxxx``,
``<your-key>``, runs of one character) are never secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec

from addon.pii.regex import (
    ANCHOR_START,
    UNANCHORED,
    capped,
    compile_raw,
    compile_set,
    without_groups,
)

DATA: Final = Path(__file__).parent / "data"
# gitleaks' keyword rules all start with a variable-name prefix and end the keyword part with the
# same separator run; the prefix only extends the match to the left, so it is dropped.
_NAME_PREFIX: Final = r"[\w.-]{0,50}?"
_KEYWORD_END: Final = r"(?:[ \t\w.-]{0,20})"
_ASSIGN_OPERATOR: Final = r"(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)"
# Shared tail of the keyword detector: the separator run, an operator, quotes, a value start.
# An HTTP authorization scheme may stand between the operator and the value.
_SCHEME: Final = r"(?:(?i:bearer|basic|token)\s+)?"
_ASSIGN_TAIL: Final = (
    _KEYWORD_END
    + r"""[\s'"]{0,3}"""
    + _ASSIGN_OPERATOR
    + r"""[\x60'"\s=]{0,5}"""
    + _SCHEME
    + r"""[^\s'"\x60]{8}"""
)
# The generic rule: a secret word, the same tail, then the value (group 1).
_GENERIC_WORDS: Final = (
    r"passw(?:or)?d|\bpwd|passphrase|secret|token|api[_.-]?key|apikey|access[_.-]?key"
    r"|private[_.-]?key|auth[_.-]?key|credentials?|\bauth"
)
_GENERIC: Final = compile_raw(
    r"(?i)(?:"
    + _GENERIC_WORDS
    + r")"
    + _KEYWORD_END
    + r"""[\s'"]{0,3}"""
    + _ASSIGN_OPERATOR
    + r"""[\x60'"\s=]{0,5}"""
    + _SCHEME
    + r"""([^\s'"\x60;,)\]}>]{8,200})"""
)
_WINDOW: Final = 8192  # bytes after a candidate's start that its rules may look at
_KEYWORD_REACH: Final = 256  # bytes before a match where a rule's context keyword may be
_MIN_KEYWORD: Final = 3  # shorter keywords ("ey", "sk", "s.") are in every text: regex instead
_BEFORE_KEYWORD: Final = 64  # bytes before a keyword where a rule's match may start
_DROPPED_IDS: Final = {
    "generic-api-key": "replaced by the generic rule (secrets.py)",
    # No literal prefix: every word (or digit run) would be a candidate of the single pass and
    # keep the DFA busy building states on all new text; their own keywords are context only.
    "azure-ad-client-secret": "no literal prefix",
    "facebook-access-token": "no literal prefix",
    "hashicorp-tf-api-token": "no literal prefix",
    "maxmind-license-key": "no literal prefix",
}


class Rule(NamedTuple):
    id: str
    pattern: str
    regex: Any  # compiled with its groups, matched anchored at a candidate's start
    secret_group: int  # 0: the first group that matched, else the whole match
    entropy: float
    allow: Any | None  # the rule's allowlist regexes (against the secret), one alternation
    keywords: tuple[bytes, ...]  # one must occur near the match (gitleaks' prefilter)


class RuleSet(NamedTuple):
    vendor: tuple[Rule, ...]
    assign: tuple[Rule, ...]
    vendor_pattern: str  # candidate pattern for the engine (no groups)
    assign_pattern: str
    dropped: tuple[tuple[str, str], ...]  # (rule id, reason)


class _Allow(msgspec.Struct):
    regexes: list[str] = []
    regexTarget: str = "secret"
    paths: list[str] = []
    stopwords: list[str] = []
    condition: str = "OR"


class _Rule(msgspec.Struct):
    id: str
    regex: str = ""
    secretGroup: int = 0
    entropy: float = 0.0
    path: str = ""
    keywords: list[str] = []
    allowlists: list[_Allow] = []


class _GlobalAllow(msgspec.Struct):
    regexes: list[str] = []


class _Config(msgspec.Struct):
    rules: list[_Rule] = []
    allowlist: _GlobalAllow = msgspec.field(default_factory=_GlobalAllow)


class _Source(msgspec.Struct):
    version: str
    commit: str
    sha256: str


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _config(data: bytes) -> _Config:
    return msgspec.convert(tomllib.loads(data.decode()), _Config)


def gitleaks_source() -> tuple[str, str]:
    """(version, commit) of the vendored gitleaks rules; raises when the file was altered."""
    source = msgspec.convert(tomllib.loads(_read("gitleaks.source.toml").decode()), _Source)
    if hashlib.sha256(_read("gitleaks.toml")).hexdigest() != source.sha256:
        raise RuntimeError("addon/pii/data/gitleaks.toml does not match gitleaks.source.toml")
    return source.version, source.commit


# gitleaks' usual end of a token; a candidate needs no end (the rule's own regex checks it).
_TERMINATORS: Final = (r"""(?:[\x60'"\s;]|\\[nr]|$)""", r"""(?:[\x60'"\s;]|\\[nr]|$|\b)""")


def _by_keyword(rule: Rule) -> bool:
    """Whether the single pass finds this rule by its keywords (gitleaks' own prefilter)."""
    return bool(rule.keywords) and all(len(k) >= _MIN_KEYWORD for k in rule.keywords)


def _literals(keywords: Iterable[bytes]) -> str:
    """A case-insensitive alternation of literal keywords (punctuation escaped as \\x{..})."""
    unique = sorted(set(keywords), key=lambda k: (-len(k), k))
    escaped = (
        "".join(chr(b) if chr(b).isalnum() else f"\\x{{{b:02x}}}" for b in k) for k in unique
    )
    return "(?i:" + "|".join(escaped) + ")"


def candidate(pattern: str) -> str:
    """A rule's pattern as a candidate of the single pass: no groups, small repetitions, no end."""
    loose = capped(without_groups(pattern))
    for end in _TERMINATORS:
        loose = loose.removesuffix(end)
    return loose


def _rule(raw: _Rule, regex: str) -> Rule:
    allow = [
        p for a in raw.allowlists if a.regexTarget == "secret" and not a.paths for p in a.regexes
    ]
    return Rule(
        id=raw.id,
        pattern=regex,
        regex=compile_raw(regex),
        secret_group=raw.secretGroup,
        entropy=raw.entropy,
        allow=compile_raw("|".join(f"(?:{p})" for p in allow)) if allow else None,
        keywords=tuple(k.lower().encode() for k in raw.keywords),
    )


def _keyword(regex: str) -> tuple[str, str] | None:
    """(keyword pattern, regex anchored at the keyword) of a keyword rule, else None."""
    end = regex.find(_KEYWORD_END)
    start = regex.rfind(_NAME_PREFIX, 0, end)
    if end < 0 or start < 0 or _ASSIGN_OPERATOR not in regex:
        return None
    head = regex[: start + len(_NAME_PREFIX)]
    flags = "(?i)" if "(?i" in head else ""
    keyword = flags + without_groups(regex[start + len(_NAME_PREFIX) : end])
    return keyword, head.replace(_NAME_PREFIX, "") + regex[start + len(_NAME_PREFIX) :]


def load_rules() -> RuleSet:
    """Local rules, then gitleaks', split into the two detectors; see the module docstring."""
    gitleaks_source()
    local = _config(_read("local_rules.toml")).rules
    overridden = {r.id for r in local}
    raws = [(True, r) for r in local] + [(False, r) for r in _config(_read("gitleaks.toml")).rules]
    vendor: list[Rule] = []
    assign: list[Rule] = []
    keywords: list[str] = []
    dropped: list[tuple[str, str]] = []
    for is_local, raw in raws:
        if not is_local and raw.id in overridden:
            dropped.append((raw.id, "adapted in local_rules.toml"))
        elif raw.id in _DROPPED_IDS:
            dropped.append((raw.id, _DROPPED_IDS[raw.id]))
        elif not raw.regex:
            dropped.append((raw.id, "matches file names only"))
        elif raw.path:
            dropped.append((raw.id, "scoped to file paths a request does not have"))
        elif (keyword := _keyword(raw.regex)) is not None:
            keywords.append(keyword[0])
            assign.append(_rule(raw, keyword[1]))
        else:
            vendor.append(_rule(raw, raw.regex))
    vendor_pattern = "|".join(
        [_literals(k for r in vendor if _by_keyword(r) for k in r.keywords)]
        + [f"(?:{candidate(r.pattern)})" for r in vendor if not _by_keyword(r)]
    )
    assign_pattern = (
        "(?i:" + "|".join(f"(?:{k})" for k in keywords) + "|" + _GENERIC_WORDS + ")" + _ASSIGN_TAIL
    )
    return RuleSet(tuple(vendor), tuple(assign), vendor_pattern, assign_pattern, tuple(dropped))


RULES: Final = load_rules()
DROPPED: Final = RULES.dropped
# Which rules may match at a candidate: the keyword found (first bytes -> keywords -> rules), or a
# set of the loosened patterns (small programs, so cheap DFA states); each rule's regex decides.
_KEYWORD_HEAD: Final = _MIN_KEYWORD
_BY_HEAD: Final[dict[bytes, list[tuple[bytes, tuple[int, ...]]]]] = {}
for _index, _vendor_rule in enumerate(RULES.vendor):
    if _by_keyword(_vendor_rule):
        for _kw in _vendor_rule.keywords:
            _entries = _BY_HEAD.setdefault(_kw[:_KEYWORD_HEAD], [])
            _known = next((e for e in _entries if e[0] == _kw), None)
            if _known is None:
                _entries.append((_kw, (_index,)))
            else:
                _entries[_entries.index(_known)] = (_kw, (*_known[1], _index))
_SHORT: Final = tuple(i for i, r in enumerate(RULES.vendor) if not _by_keyword(r))
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
_NOT_SECRET: Final = compile_raw(
    "|".join(f"(?:{p})" for p in [*_config(_read("gitleaks.toml")).allowlist.regexes, _PLACEHOLDER])
)
_ONLY_NAME: Final = compile_raw(r"[a-zA-Z_.\-]+")  # a word or variable name, not a secret


_C_LOG2_C: Final = (0.0, *(c * math.log2(c) for c in range(1, _WINDOW + 1)))


def entropy(value: bytes) -> float:
    """Shannon entropy in bits per byte: log2(n) - sum(c·log2 c)/n over the byte counts."""
    n = len(value)
    if not n or n > _WINDOW:
        return 0.0
    return math.log2(n) - sum(_C_LOG2_C[value.count(b)] for b in set(value)) / n


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


def _mixed_case_and_digit(value: bytes) -> bool:
    body = value.split(b"-", 1)[-1]
    return (
        any(48 <= c <= 57 for c in body)
        and any(65 <= c <= 90 for c in body)
        and any(97 <= c <= 122 for c in body)
    )


# Checks some rules need beyond entropy (by rule id).
_CHECKS: Final = {
    "jwt": _is_jwt,
    "jwt-any": _is_jwt,
    "openai-api-key-any": _mixed_case_and_digit,
}


def _secret_span(rule: Rule, buf: bytes, start: int) -> tuple[int, int] | None:
    """The secret's span when ``rule`` accepts the text at ``start``."""
    spans = rule.regex.Match(ANCHOR_START, buf, start, min(len(buf), start + _WINDOW))
    if spans[0][0] < 0:
        return None
    groups = spans[1:]
    if rule.secret_group and rule.secret_group <= len(groups):
        span = groups[rule.secret_group - 1]
    else:
        span = next((g for g in groups if g[0] >= 0 and g[1] > g[0]), spans[0])
    value = buf[span[0] : span[1]]
    if not value or (rule.entropy and entropy(value) < rule.entropy):
        return None
    # gitleaks runs a rule only where one of its keywords occurs; most keywords are the prefix
    # itself, a few are context (a bare 40-hex Sourcegraph token needs "sourcegraph" nearby).
    if rule.keywords:
        near = buf[max(0, start - _KEYWORD_REACH) : spans[0][1]].lower()
        if not any(k in near for k in rule.keywords):
            return None
    if rule.allow is not None and _search(rule.allow, value):
        return None
    if not_a_secret(value):
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


def _around_keyword(rule: Rule, buf: bytes, start: int) -> tuple[int, int] | None:
    """The secret of ``rule``'s match that contains the keyword found at ``start``."""
    pos, stop = max(0, start - _BEFORE_KEYWORD), min(len(buf), start + _WINDOW)
    while pos <= start:
        match_start, match_end = rule.regex.Match(UNANCHORED, buf, pos, stop)[0]
        if match_start < 0 or match_start > start:
            return None
        if match_end > start:
            return _secret_span(rule, buf, match_start)
        pos = max(match_end, match_start + 1)
    return None


def valid_vendor(buf: bytes, start: int, end: int) -> tuple[int, int] | None:
    """A vendor candidate: a keyword (or a short-keyword rule's match) at ``start``; the secret
    of the first rule, in file order, whose match holds it."""
    head = buf[start : start + _KEYWORD_HEAD].lower()
    indices = sorted(
        {
            i
            for keyword, rules in _BY_HEAD.get(head, ())
            if buf[start : start + len(keyword)].lower() == keyword
            for i in rules
        }
    )
    for index in indices:
        span = _around_keyword(RULES.vendor[index], buf, start)
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
    if entropy(value) < 3.0 or not_a_secret(value):
        return False
    classes = (
        any(48 <= c <= 57 for c in value)
        + any(65 <= c <= 90 for c in value)
        + any(97 <= c <= 122 for c in value)
        + any(not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122) for c in value)
    )
    return classes >= 2


def valid_assign(buf: bytes, start: int, end: int) -> tuple[int, int] | None:
    """A keyword assignment: a vendor keyword rule, else the generic rule, decides."""
    span = _first_rule(RULES.assign, _ASSIGN_SET, buf, start)
    if span is not None:
        return span
    spans = _GENERIC.Match(ANCHOR_START, buf, start, min(len(buf), start + 512))
    if spans[0][0] < 0:
        return None
    value_start, value_end = spans[1]
    value = buf[value_start:value_end].rstrip(b".")
    return (value_start, value_start + len(value)) if generic_secret_ok(value) else None
