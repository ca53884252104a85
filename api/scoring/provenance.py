"""Provenance and data flow: where a tool call's values came from in the conversation.

The request that produced an LLM tool call holds the conversation. Its text is indexed once per
request into token sets by trust level (:class:`Conversation`): what the user and the system said
is **trusted**, what tools returned is **untrusted** (the model's own turns are neither). Each
value that steers a call (a destination, an amount, an identifier; :func:`provenance_facts`) is
then looked up by its normalised form: found in trusted text it is ``trusted``, only in tool
output ``untrusted`` (the signature of an indirect prompt injection), nowhere ``invented`` (by the
model). Tokens of 6 characters or more of the call's free-text payload that only a tool returned
are a data flow (``flow_token_count``, ``exfiltration`` on an outbound call).

Tool output is also searched once for instruction cues addressed to the model
(``instruction_cues.yaml``, RE2 patterns: "ignore previous instructions", "you must now …",
polite imperatives to act): ``instruction_in_tool_result``.

Cost is linear: indexing visits each conversation character once (bounded by ``MAX_CHARS``); a
lookup is a set membership per value token. For the MCP path the proxy keeps only salted digests
of tool-result tokens per session (:class:`SessionFlow`), never the text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import yaml

from addon.conditions import compile_regex
from api.scoring.fields import words

TRUSTED: Final = "trusted"
UNTRUSTED: Final = "untrusted"
INVENTED: Final = "invented"
#: The shortest token that data flow follows (shorter ones recur by chance).
MIN_FLOW_TOKEN: Final = 6
#: Characters of one conversation indexed; the rest is not (older turns first are kept).
MAX_CHARS: Final = 512 * 1024
#: Characters of tool output searched for instruction cues.
MAX_CUE_CHARS: Final = 64 * 1024
CUES_FILE: Final = Path(__file__).with_name("instruction_cues.yaml")

_SPLIT_RE: Final = re.compile(r"[^\s\"'`<>()\[\]{};:=|*]+")
_STRIP: Final = ".,:!?*#\\/=_-"
_SCHEME_RE: Final = re.compile(r"^(?:https?|ftp|wss?)://(?:www\.)?|^www\.")
_NUMBER_RE: Final = re.compile(r"^[$€£¥₹]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?$")
_NUMBER_START: Final = frozenset("0123456789$€£¥₹")
_MONEY_WORDS: Final = frozenset(
    {"amount", "total", "price", "sum", "cost", "fee", "payment", "subtotal", "quantity"}
)
# Outbound verb classes: the data in their arguments leaves the system.
_OUTBOUND: Final = frozenset({"send", "export", "payment"})
_MAX_LEAVES: Final = 400


def norm(token: str) -> str:
    """A token as the index keeps it: lower case, no surrounding punctuation, no URL scheme,
    numbers in one spelling (``$1,500.00`` and ``1500`` are the same)."""
    return _norm_lower(token.lower())


def _norm_lower(token: str) -> str:
    t = token.strip(_STRIP)
    if "//" in t or t.startswith("www."):
        t = _SCHEME_RE.sub("", t).rstrip("/")
    if t and t[0] in _NUMBER_START:
        m = _NUMBER_RE.match(t)
        if m:
            t = f"{float(m.group(1).replace(',', '') + (m.group(2) or '')):g}"
    return t


def tokens(text: str) -> list[str]:
    """The distinct normalised tokens of a text (empty ones dropped)."""
    return [n for raw in set(_SPLIT_RE.findall(text.lower())) if (n := _norm_lower(raw))]


class Cues:
    """The instruction-cue patterns (one RE2 alternation, case-insensitive)."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns
        self._re = compile_regex("(?i)(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")

    def search(self, text: str) -> bool:
        """True when `text` (its first ``MAX_CUE_CHARS``) carries an instruction to the model."""
        return self._re.search(text[:MAX_CUE_CHARS]) is not None


@lru_cache(maxsize=1)
def cues() -> Cues:
    """The shipped cue set (``instruction_cues.yaml``)."""
    doc = yaml.safe_load(CUES_FILE.read_text(encoding="utf-8"))
    return Cues([str(p) for p in doc["patterns"]])


def has_instruction(text: str) -> bool:
    """Whether a tool's output carries instruction-like text addressed to the model."""
    return cues().search(text)


class Conversation:
    """The tokens of one conversation by trust level, indexed once.

    ``key`` maps a normalised token to what is stored (identity for a request's own messages,
    which live only as long as the request; a salted digest for what a session remembers).
    ``has_trusted``: the user's and system's words are known, so a value found nowhere is
    ``invented``; without them (MCP) it is unknown.
    """

    __slots__ = ("_chars", "has_trusted", "instruction", "key", "trusted", "untrusted")

    def __init__(self, key: Callable[[str], str] | None = None) -> None:
        self.key = key
        self.trusted: set[str] = set()
        self.untrusted: set[str] = set()
        self.instruction = False
        self.has_trusted = False
        self._chars = 0

    def add(self, trust: str, text: str) -> None:
        """Index one message's text (``trust``: trusted or untrusted)."""
        room = MAX_CHARS - self._chars
        if room <= 0 or not text:
            return
        text = text[:room]
        self._chars += len(text)
        toks = tokens(text)
        if self.key is not None:
            toks = [self.key(t) for t in toks if len(t) >= MIN_FLOW_TOKEN]
        if trust == TRUSTED:
            self.has_trusted = True
            self.trusted.update(toks)
        else:
            self.untrusted.update(toks)
            if not self.instruction and has_instruction(text):
                self.instruction = True

    def _k(self, t: str) -> str:
        return self.key(t) if self.key is not None else t

    def locate(self, value: str) -> str | None:
        """Where a value came from: trusted, untrusted, invented, or None (not known)."""
        n = norm(value)
        if not n:
            return None
        k = self._k(n)
        if k in self.trusted:
            return TRUSTED
        if k in self.untrusted:
            return UNTRUSTED
        parts = tokens(value)
        if self.key is not None:
            parts = [p for p in parts if len(p) >= MIN_FLOW_TOKEN]
        if len(parts) > 1:
            keys = [self._k(p) for p in parts]
            if all(p in self.trusted for p in keys):
                return TRUSTED
            if all(p in self.trusted or p in self.untrusted for p in keys):
                return UNTRUSTED
        return INVENTED if self.has_trusted else None

    def flowed(self, text: str) -> set[str]:
        """Tokens (6+ characters) of a text that only tool output holds."""
        out: set[str] = set()
        for raw in set(_SPLIT_RE.findall(text[:16384].lower())):
            if len(raw) < MIN_FLOW_TOKEN:
                continue
            t = _norm_lower(raw)
            if len(t) < MIN_FLOW_TOKEN:
                continue
            k = self._k(t)
            if k in self.untrusted and k not in self.trusted:
                out.add(k)
        return out


def _leaves(params: dict[str, Any]) -> Iterable[tuple[str, frozenset[str], Any]]:
    """(path, key words, value) of the scalar leaves, paths spelled as values.py spells them."""
    stack: list[tuple[str, frozenset[str], Any, int]] = [("$", frozenset(), params, 0)]
    seen = 0
    while stack and seen < _MAX_LEAVES:
        path, kws, value, depth = stack.pop()
        if depth > 8:
            continue
        if isinstance(value, dict):
            for k, v in reversed(list(value.items())):
                key = str(k)
                child = f"{path}.{key}" if key.isidentifier() else f"{path}[*]"
                stack.append((child, frozenset(words(key)) or kws, v, depth + 1))
        elif isinstance(value, list | tuple):
            for i in range(len(value) - 1, -1, -1):
                stack.append((f"{path}[{i}]", kws, value[i], depth + 1))
        else:
            seen += 1
            yield path, kws, value


_WORST: Final = {None: 0, TRUSTED: 1, INVENTED: 2, UNTRUSTED: 3}


def _worse(a: str | None, b: str | None) -> str | None:
    return a if _WORST[a] >= _WORST[b] else b


def provenance_facts(
    params: dict[str, Any],
    destination_paths: Iterable[str],
    verb_class: str,
    conversation: Conversation | None,
) -> dict[str, Any]:
    """The provenance and data-flow facts of a call's parameters (all unknown without a
    conversation)."""
    if conversation is None:
        return {
            "provenance": None,
            "destination_provenance": None,
            "untrusted_value_count": 0,
            "invented_value_count": 0,
            "instruction_in_tool_result": None,
            "flow_token_count": 0,
            "exfiltration": None,
        }
    dest = set(destination_paths)
    overall = dest_prov = None
    untrusted = invented = 0
    flowed: set[str] = set()
    for path, kws, value in _leaves(params):
        if isinstance(value, bool) or value is None:
            continue
        where: str | None = None
        is_dest = path in dest
        if isinstance(value, int | float):
            if kws & _MONEY_WORDS:
                where = conversation.locate(f"{value:g}")
        elif isinstance(value, str):
            s = value.strip()
            if is_dest or (
                len(s) <= 128
                and (" " not in s or kws & _MONEY_WORDS)
                and any(c.isdigit() or c in "@/" for c in s)
            ):
                where = conversation.locate(s)
            elif " " in s:
                flowed |= conversation.flowed(s)
        if where is None:
            continue
        untrusted += where == UNTRUSTED
        invented += where == INVENTED
        overall = _worse(overall, where)
        if is_dest:
            dest_prov = _worse(dest_prov, where)
    outbound = verb_class in _OUTBOUND
    return {
        "provenance": overall,
        "destination_provenance": dest_prov,
        "untrusted_value_count": untrusted,
        "invented_value_count": invented,
        "instruction_in_tool_result": conversation.instruction,
        "flow_token_count": len(flowed),
        "exfiltration": outbound and bool(flowed),
    }


class SessionFlow:
    """What one session's tool results left behind, for the MCP path: salted digests of their
    tokens (6+ characters, at most ``limit``) and whether any carried instruction cues."""

    __slots__ = ("_limit", "conversation")

    def __init__(self, salt: bytes, limit: int = 20_000) -> None:
        def key(t: str) -> str:
            return hashlib.blake2b(t.encode(), key=salt, digest_size=8).hexdigest()

        self.conversation = Conversation(key)
        self._limit = limit

    def add_result(self, text: str) -> tuple[list[str], bool]:
        """Remember one tool result: (the digests it added, whether it carries instruction
        cues). Bounded: past ``limit`` digests, new tokens are not kept."""
        conv = self.conversation
        text = text[:MAX_CHARS]
        key = conv.key
        assert key is not None
        fresh = {key(t) for t in tokens(text) if len(t) >= MIN_FLOW_TOKEN} - conv.untrusted
        keys = sorted(fresh)[: max(0, self._limit - len(conv.untrusted))]
        conv.untrusted.update(keys)
        cue = has_instruction(text)
        conv.instruction = conv.instruction or cue
        return keys, cue

    def merge(self, digests: Iterable[str], instruction: bool) -> None:
        """What another process's :meth:`add_result` found (salted with the same salt)."""
        conv = self.conversation
        room = self._limit - len(conv.untrusted)
        if room > 0:
            conv.untrusted.update(list(digests)[:room])
        conv.instruction = conv.instruction or instruction
