"""Secret rules: gitleaks' vendored rule set and our own, read and split for the single pass.

``data/gitleaks.toml`` is vendored verbatim (provenance and digest in ``gitleaks.source.toml``,
licence in ``gitleaks.LICENSE``); ``data/local_rules.toml`` adds what it lacks, in the same format
(a local rule with a gitleaks id replaces it). The rules become two detectors of the engine:

- ``secret``: vendor rules, found by their keywords (gitleaks' own prefilter, as one literal
  alternation; rules whose keywords are too short to prefilter by are found by their loosened
  regex, see :func:`candidate`).
- ``secret_assign``: the keyword rules (``cloudflare ... = <value>``) factored into one keyword
  alternation with one shared assignment tail (99 copies of the tail made the DFA three times
  slower), plus the words of the generic rule in ``secrets.py``.

``DROPPED`` lists the rules not used, with the reason: rules without a regex (file names only),
rules scoped to file paths (a request has none), rules without a literal prefix (every word would
be a candidate), gitleaks' ``generic-api-key`` (its 1,446 stopwords and file-oriented allowlists
do not fit prompts; the generic rule replaces it), and the ones adapted in ``local_rules.toml``.
Every regex compiles with RE2 (gitleaks is written in Go, whose regexp is RE2's syntax).

Four adaptations at load time, for prompts rather than files: a token may end at any character
that cannot continue it (gitleaks ends it at a quote, a space or ';'; prose ends it with ',', ')',
'**', URLs with '&', JSON text inside JSON with '\\"'); a rule joining a keyword form and a
prefixed form (``jira = <hex>|ATATT3...``) gives each alternative to its own detector; a keyword
rule whose own keyword begins the secret (``nrak`` for ``NRAK-...``) also counts the secret
without the vendor's name; and "is"/"was" assign too ("my mailgun key is key-...").
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec

from addon.pii.regex import capped, compile_raw, without_groups

DATA: Final = Path(__file__).parent / "data"
# gitleaks' keyword rules all start with a variable-name prefix and end the keyword part with the
# same separator run; the prefix only extends the match to the left, so it is dropped.
_NAME_PREFIX: Final = r"[\w.-]{0,50}?"
KEYWORD_END: Final = r"(?:[ \t\w.-]{0,20})"
ASSIGN_OPERATOR: Final = r"(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)"
# Prompts assign in prose too ("my mailgun key is key-..."): the operators plus "is"/"was".
PROSE_OPERATOR: Final = r"(?:=|>|:{1,3}=|\|\||:|=>|\?=|,|\bis\b|\bwas\b)"
# An HTTP authorization scheme may stand between the operator and the value.
SCHEME: Final = r"(?:(?i:bearer|basic|token)\s+)?"
# Shared tail of the keyword detector: the separator run, an operator, quotes, a value start.
_ASSIGN_TAIL: Final = (
    KEYWORD_END
    + r"""[\s'"]{0,3}"""
    + PROSE_OPERATOR
    + r"""[\x60'"\s=]{0,5}"""
    + SCHEME
    + r"""[^\s'"\x60]{8}"""
)
# The words of the generic rule (secrets.py): a secret word, the same tail, then a random value.
GENERIC_WORDS: Final = (
    r"passw(?:or)?d|\bpwd|passphrase|secret|token|api[_.-]?key|apikey|access[_.-]?key"
    r"|(?:private|auth|account|storage|signing|master|encryption)[_.\- ]?key|credentials?|\bauth"
)
# A command line passes a secret as an option's argument: "--secret-access-key X",
# "--password X", "aws configure set aws_secret_access_key X".
FLAG_NAME: Final = r"(?i:(?:--|\bset[ \t]+)[\w-]*?(?:" + GENERIC_WORDS + r")[\w-]*[ \t]+)" + SCHEME
MIN_KEYWORD: Final = 3  # shorter keywords ("ey", "sk", "s.") are in every text: regex instead
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
    allow: str | None  # the rule's allowlist regexes (against the secret), one alternation
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


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def config(data: bytes) -> _Config:
    return msgspec.convert(tomllib.loads(data.decode()), _Config)


def gitleaks_source() -> tuple[str, str]:
    """(version, commit) of the vendored gitleaks rules; raises when the file was altered."""
    source = msgspec.convert(tomllib.loads(read("gitleaks.source.toml").decode()), _Source)
    if hashlib.sha256(read("gitleaks.toml")).hexdigest() != source.sha256:
        raise RuntimeError("addon/pii/data/gitleaks.toml does not match gitleaks.source.toml")
    return source.version, source.commit


# gitleaks' usual end of a token. Code ends a token with a quote, a space or ';'; prose, markdown,
# URLs and JSON text inside JSON end it with anything else too ("use sk_live_..., then", "(key)",
# "**key**", "?sig=...&", '\\"'), so the rules are loaded with "no further token character".
# A candidate needs no end (the rule's own regex checks it).
_GITLEAKS_END: Final = r"""(?:[\x60'"\s;]|\\[nr]|$)"""
_PROSE_END: Final = r"(?:[^A-Za-z0-9_\-]|$)"
_TERMINATORS: Final = (_PROSE_END, r"""(?:[\x60'"\s;]|\\[nr]|$|\b)""")


def by_keyword(rule: Rule) -> bool:
    """Whether the single pass finds this rule by its keywords (gitleaks' own prefilter)."""
    return bool(rule.keywords) and all(len(k) >= MIN_KEYWORD for k in rule.keywords)


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


def _alternatives(regex: str) -> list[str]:
    """The top-level alternatives of ``regex``, each with the leading flags of the whole."""
    flags = ""
    if regex.startswith("(?") and regex[2:3].isalpha() and ")" in regex[:8]:
        flags = regex[: regex.index(")") + 1]
        regex = regex[len(flags) :]
    out: list[str] = []
    depth, start, i, in_class = 0, 0, 0, False
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if regex.startswith("^]", i + 1) or regex.startswith("]", i + 1):
                i += 1 + (regex[i + 1] == "^")
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(flags + regex[start:i])
            start = i + 1
        i += 1
    out.append(flags + regex[start:])
    return out


def _value_rule(raw: _Rule, anchored: str) -> str | None:
    """A keyword rule's secret on its own, when one of its keywords is the secret's own prefix.

    gitleaks' keywords are its prefilter; a keyword such as ``nrak`` that begins the secret
    (``NRAK-...``) says the value alone identifies the vendor, so it counts without its name.
    """
    tail = ASSIGN_OPERATOR + r"""[\x60'"\s=]{0,5}"""
    at = anchored.find(tail)
    if at < 0 or not anchored.startswith("(", at + len(tail)):
        return None
    value = anchored[at + len(tail) :]
    literal = ""
    for c in value[1:]:
        if not (c.isalnum() or c in "-_"):
            break
        literal += c
    if len(literal) < MIN_KEYWORD or not any(
        literal.lower().startswith(k.lower()) for k in raw.keywords
    ):
        return None
    flags = "(?i)" if anchored.startswith("(?i)") else ""
    return flags + r"\b" + value


def _rule(raw: _Rule, regex: str) -> Rule:
    regex = regex.replace(_GITLEAKS_END, _PROSE_END).replace(ASSIGN_OPERATOR, PROSE_OPERATOR)
    allow = [
        p for a in raw.allowlists if a.regexTarget == "secret" and not a.paths for p in a.regexes
    ]
    return Rule(
        id=raw.id,
        pattern=regex,
        regex=compile_raw(regex),
        secret_group=raw.secretGroup,
        entropy=raw.entropy,
        allow="|".join(f"(?:{p})" for p in allow) if allow else None,
        keywords=tuple(k.lower().encode() for k in raw.keywords),
    )


def _keyword(regex: str) -> tuple[str, str] | None:
    """(keyword pattern, regex anchored at the keyword) of a keyword rule, else None."""
    end = regex.find(KEYWORD_END)
    start = regex.rfind(_NAME_PREFIX, 0, end)
    if end < 0 or start < 0 or ASSIGN_OPERATOR not in regex:
        return None
    head = regex[: start + len(_NAME_PREFIX)]
    flags = "(?i)" if "(?i" in head else ""
    keyword = flags + without_groups(regex[start + len(_NAME_PREFIX) : end])
    return keyword, head.replace(_NAME_PREFIX, "") + regex[start + len(_NAME_PREFIX) :]


def load_rules() -> RuleSet:
    """Local rules, then gitleaks', split into the two detectors; see the module docstring."""
    gitleaks_source()
    local = config(read("local_rules.toml")).rules
    overridden = {r.id for r in local}
    raws = [(True, r) for r in local] + [(False, r) for r in config(read("gitleaks.toml")).rules]
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
        else:
            # A rule may join a keyword form and a prefixed form (``jira = <hex>|ATATT3...``):
            # each alternative goes to its own detector.
            parts = _alternatives(raw.regex) if raw.secretGroup == 0 else [raw.regex]
            for part in parts:
                if (keyword := _keyword(part)) is not None:
                    keywords.append(keyword[0])
                    assign.append(_rule(raw, keyword[1]))
                    if (value := _value_rule(raw, keyword[1])) is not None:
                        vendor.append(_rule(raw, value))
                else:
                    vendor.append(_rule(raw, part))
    vendor_pattern = "|".join(
        [_literals(k for r in vendor if by_keyword(r) for k in r.keywords)]
        + [f"(?:{candidate(r.pattern)})" for r in vendor if not by_keyword(r)]
    )
    assign_pattern = (
        "(?i:"
        + "|".join(f"(?:{k})" for k in keywords)
        + "|"
        + GENERIC_WORDS
        + ")"
        + _ASSIGN_TAIL
        + "|"
        + FLAG_NAME
        + r"""[^\s'"\x60]{8}"""
    )
    return RuleSet(tuple(vendor), tuple(assign), vendor_pattern, assign_pattern, tuple(dropped))


RULES: Final = load_rules()
DROPPED: Final = RULES.dropped


def global_allowlist() -> list[str]:
    """gitleaks' global allowlist regexes (against a secret: ``${VAR}``, ``true``, ``/usr/...``)."""
    return config(read("gitleaks.toml")).allowlist.regexes
