"""Provenance and data flow: where a tool call's values came from in the conversation.

The request that produced an LLM tool call holds the conversation. Its text is indexed once per
request into token sets by trust level (:class:`Conversation`): what the user and the system said
is **trusted**, what tools returned is **untrusted** (the model's own turns are neither). Each
value that steers a call (a destination, an amount, an identifier; :func:`provenance_facts`) is
then looked up by its normalised form: found in trusted text it is ``trusted``, only in tool
output ``untrusted`` (the signature of an indirect prompt injection), nowhere ``invented`` (by the
model). Tokens of 6 characters or more of the call's free-text payload that only a tool returned
are a data flow (``flow_token_count``, ``exfiltration`` on an outbound call).

Tool output is also searched once for instruction cues (``instruction_cues.yaml``, RE2
patterns) in two tiers: text addressed to the model as a model ("ignore previous instructions",
"you must now …", speech to an AI, demands to act without the user's confirmation, attempts to
put something before the task it was given): ``instruction_in_tool_result``; and polite
imperatives an ordinary e-mail also holds ("Please transfer …"): ``request_in_tool_result``.
The tokens of the text around each instruction cue (``INJECTED_BEFORE`` characters before,
``INJECTED_AFTER`` after, at most ``MAX_CUE_WINDOWS`` windows per tool result) are kept apart as
**injected**: a value the call takes from there was supplied by text that gives the agent orders
(``injected_value_count``, ``injected_destination``, ``injected_flow_count``), which tells an
injected value from one the user delegated ("pay the bill in this file": the bill holds the
account, and no instruction to the model).

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
from api.scoring.verbs import NOUN_VERBS, VERB_CLASS

TRUSTED: Final = "trusted"
UNTRUSTED: Final = "untrusted"
INVENTED: Final = "invented"
#: The shortest token that data flow follows (shorter ones recur by chance).
MIN_FLOW_TOKEN: Final = 6
#: Characters of one conversation indexed; the rest is not (older turns first are kept).
MAX_CHARS: Final = 512 * 1024
#: Characters of tool output searched for instruction cues.
MAX_CUE_CHARS: Final = 64 * 1024
#: The text around an instruction cue whose tokens count as injected: orders come after the cue
#: that addresses the model more often than before it.
INJECTED_BEFORE: Final = 500
INJECTED_AFTER: Final = 1500
#: Instruction cues per tool result whose surroundings are indexed as injected.
MAX_CUE_WINDOWS: Final = 8
CUES_FILE: Final = Path(__file__).with_name("instruction_cues.yaml")

_SPLIT_RE: Final = re.compile(r"[^\s\"'`<>()\[\]{};:=|*]+")
_STRIP: Final = ".,:!?*#\\/=_-"
_SCHEME_RE: Final = re.compile(r"^(?:https?|ftp|wss?)://(?:www\.)?|^www\.")
_NUMBER_RE: Final = re.compile(r"^[$€£¥₹]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?$")
_NUMBER_START: Final = frozenset("0123456789$€£¥₹")
# What splitting "https://host/x" on ":" leaves of the scheme: not part of the value.
_SCHEMES: Final = frozenset({"http", "https", "ftp", "ws", "wss"})
_MONEY_WORDS: Final = frozenset(
    {"amount", "total", "price", "sum", "cost", "fee", "payment", "subtotal", "quantity"}
)
# Outbound verb classes: the data in their arguments leaves the system.
_OUTBOUND: Final = frozenset({"send", "export", "payment"})
# Keys whose value is a credential the call sets: a steering value however it is spelled.
_CREDENTIAL_WORDS: Final = frozenset(
    {"password", "passwd", "passcode", "passphrase", "pin", "secret", "token", "otp"}
)
_MAX_LEAVES: Final = 400
#: Verb classes that ask for the same kind of effect: a user who says "pay" or "transfer" asks
#: for what a money-transfer tool does, one who says "add" for what a calendar tool does.
_FAMILY: Final = {
    "send": "outbound", "export": "outbound", "payment": "outbound", "write": "change",
    "delete": "delete", "privilege": "privilege", "execute": "run", "deploy": "run",
    "install": "run",
}  # fmt: skip


_ALL_FAMILIES: Final = frozenset(_FAMILY.values())
_IRREGULAR: Final = {"sent": "send", "paid": "pay", "bought": "buy", "sold": "sell"}
_WORD_RE: Final = re.compile(r"[a-z]+")
# Words after which a noun-like verb word ("email", "message", "order") is the noun: "read the
# latest email" asks for no e-mail to be sent.
_DETERMINERS: Final = frozenset(
    {"the", "a", "an", "my", "your", "his", "her", "its", "our", "their", "this", "that", "these",
     "those", "latest", "last", "recent", "new", "next", "previous", "first", "each", "every",
     "any", "some", "no", "of", "unread", "old"}
)  # fmt: skip


# The user hands the agent the requests of a source: "do the actions specified in the email",
# "follow the instructions in this file". Then what that source asks for is asked for.
_DELEGATION_RE: Final = compile_regex(
    r"(?i)\b(do|perform|carry\s+out|complete|follow|execute|handle|take\s+care\s+of|act\s+on)"
    r"\s+(all\s+|each\s+of\s+|every\s+)?(the\s+|any\s+)?(actions?|tasks?|instructions?|steps"
    r"|requests?|to-?dos?|items?|what)\b[^.\n]{0,60}?\b(in|from|on)\s+(the|this|that|my|his|her"
    r"|their|our|an?)\s+(\w+\s+){0,3}?(e-?mails?|messages?|files?|documents?|docs?|pages?|notes?"
    r"|lists?|tickets?|issues?|posts?|threads?|websites?|inbox|channel)\b"
    r"|\b(do|follow)\s+what(ever)?\s+(the|this|that|my|his|her|their)\s+(\w+\s+){0,2}?"
    r"(e-?mail|message|file|document|doc|page|note|list|ticket|issue|post|website)\s+"
    r"(says|asks|requests|tells|wants)\b"
)


def delegates(text: str) -> bool:
    """Whether a trusted text hands the agent what a document or message asks for."""
    return _DELEGATION_RE.search(text[:MAX_CUE_CHARS]) is not None


def requested_families(text: str) -> frozenset[str]:
    """The verb families a trusted text asks for, one pass over its words: a noun-like verb
    word counts only when no determiner precedes it ("email Sam", not "the latest email"); and
    every family when the text hands over a source's requests (:func:`delegates`). Each request
    repeats the system prompt and the user's words, so short texts are remembered."""
    if len(text) <= _CACHED_TEXT:
        return _requested_cached(text)
    return _requested(text)


_CACHED_TEXT: Final = 8192


@lru_cache(maxsize=1024)
def _requested_cached(text: str) -> frozenset[str]:
    return _requested(text)


def _requested(text: str) -> frozenset[str]:
    if delegates(text):
        return _ALL_FAMILIES
    out: set[str] = set()
    prev = ""
    for m in _WORD_RE.finditer(text.lower()):
        w = m.group(0)
        fam = _verb_family(w)
        noun = w in NOUN_VERBS or (w.endswith("s") and w[:-1] in NOUN_VERBS)
        if fam is not None and not (noun and prev in _DETERMINERS):
            out.add(fam)
        prev = w
    return frozenset(out)


@lru_cache(maxsize=16384)
def _verb_family(token: str) -> str | None:
    """The family of the verb a word of the user's is ("paying", "invited", "deletes" too)."""
    if not token.isalpha() or len(token) < 2:
        return None
    for cand in (
        _IRREGULAR.get(token, token),
        token[:-1] if token.endswith("s") else "",
        token[:-2] if token.endswith("es") else "",
        token[:-1] if token.endswith("ed") else "",
        token[:-2] if token.endswith("ed") else "",
        token[:-3] if token.endswith("ing") else "",
        token[:-3] + "e" if token.endswith("ing") else "",
    ):
        cls = VERB_CLASS.get(cand) if cand else None
        if cls is not None:
            return _FAMILY.get(cls)
    return None


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


@lru_cache(maxsize=512)
def _window_tokens(window: str) -> tuple[str, ...]:
    """The tokens of an injected window. Each request of a session repeats the tool results
    before it, so the same windows come back; they are at most a few KiB each."""
    return tuple(tokens(window))


def _alternation(patterns: list[str]) -> Any:
    return compile_regex("(?i)(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")


class Cues:
    """The instruction-cue patterns: `patterns` address the model, `requests` are polite
    imperatives (each tier one RE2 alternation, case-insensitive)."""

    def __init__(self, patterns: list[str], requests: list[str] | None = None) -> None:
        self.patterns = patterns
        self.requests = requests or []
        self._re = _alternation(patterns)
        self._req = _alternation(self.requests) if self.requests else None

    def search(self, text: str) -> bool:
        """True when `text` (its first ``MAX_CUE_CHARS``) carries an instruction to the model."""
        return self._re.search(text[:MAX_CUE_CHARS]) is not None

    def windows(self, text: str) -> list[str]:
        """The text around each instruction cue of `text` (``INJECTED_BEFORE`` characters
        before, ``INJECTED_AFTER`` after, overlapping windows merged, at most
        ``MAX_CUE_WINDOWS``); empty when there is no cue. Matched on the UTF-8 bytes, encoded
        once (the RE2 wrapper re-encodes a str on every match), so windows are cut in bytes."""
        head = text[:MAX_CUE_CHARS].encode("utf-8", "surrogatepass")
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(self._re.finditer(head)):
            if i >= MAX_CUE_WINDOWS:
                break
            start, end = max(0, m.start() - INJECTED_BEFORE), m.end() + INJECTED_AFTER
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
        return [head[a:b].decode("utf-8", "ignore") for a, b in spans]

    def request(self, text: str) -> bool:
        """True when `text` asks its reader, politely, to act (an e-mail may, too)."""
        return self._req is not None and self._req.search(text[:MAX_CUE_CHARS]) is not None


@lru_cache(maxsize=1)
def cues() -> Cues:
    """The shipped cue set (``instruction_cues.yaml``)."""
    doc = yaml.safe_load(CUES_FILE.read_text(encoding="utf-8"))
    return Cues([str(p) for p in doc["patterns"]], [str(p) for p in doc.get("requests") or ()])


def has_instruction(text: str) -> bool:
    """Whether a tool's output carries instruction-like text addressed to the model."""
    return cues().search(text)


def has_request(text: str) -> bool:
    """Whether a tool's output asks its reader to act (a polite imperative)."""
    return cues().request(text)


class Conversation:
    """The tokens of one conversation by trust level, indexed once.

    ``key`` maps a normalised token to what is stored (identity for a request's own messages,
    which live only as long as the request; a salted digest for what a session remembers).
    ``has_trusted``: the user's and system's words are known, so a value found nowhere is
    ``invented``; without them (MCP) it is unknown. ``injected``: the untrusted tokens that sit
    next to an instruction cue (a subset of ``untrusted``).
    """

    __slots__ = (
        "_chars", "_standing", "has_trusted", "injected", "instruction", "key", "request",
        "requested", "trusted", "untrusted", "user_spoke",
    )  # fmt: skip

    def __init__(self, key: Callable[[str], str] | None = None) -> None:
        self.key = key
        self.trusted: set[str] = set()
        self.untrusted: set[str] = set()
        self.injected: set[str] = set()
        self.instruction = False
        self.request = False
        #: The kinds of effect (verb families) the user's words ask for; the system's standing
        #: instructions' when no user message is known (an agent whose task is its prompt).
        self.requested: set[str] = set()
        self._standing: set[str] = set()
        self.user_spoke = False
        self.has_trusted = False
        self._chars = 0

    def add(self, trust: str, text: str, *, standing: bool = False) -> None:
        """Index one message's text (``trust``: trusted or untrusted). ``standing``: a trusted
        text of the system or developer rather than the user. A system prompt describes what
        the agent *can* do ("you can send e-mails and pay bills"), so its verbs say what the
        user asked for only while no user message is known."""
        room = MAX_CHARS - self._chars
        if room <= 0 or not text:
            return
        text = text[:room]
        self._chars += len(text)
        toks = tokens(text)
        if trust == TRUSTED:
            if standing:
                self._standing |= requested_families(text)
                if not self.user_spoke:
                    self.requested |= self._standing
            else:
                if not self.user_spoke:
                    self.requested = set()  # the system's verbs stood in for the user's
                    self.user_spoke = True
                self.requested |= requested_families(text)
        if self.key is not None:
            toks = [self.key(t) for t in toks if len(t) >= MIN_FLOW_TOKEN]
        if trust == TRUSTED:
            self.has_trusted = True
            self.trusted.update(toks)
        else:
            self.untrusted.update(toks)
            c = cues()
            windows = c.windows(text)
            if windows:
                self.instruction = True
                for window in windows:
                    part = list(_window_tokens(window))
                    if self.key is not None:
                        part = [self.key(t) for t in part if len(t) >= MIN_FLOW_TOKEN]
                    self.injected.update(part)
            if not self.request and c.request(text):
                self.request = True

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
        parts = [p for p in tokens(value) if p not in _SCHEMES]
        if self.key is not None:
            parts = [p for p in parts if len(p) >= MIN_FLOW_TOKEN]
        if len(parts) > 1:
            keys = [self._k(p) for p in parts]
            if all(p in self.trusted for p in keys):
                return TRUSTED
            if all(p in self.trusted or p in self.untrusted for p in keys):
                return UNTRUSTED
        return INVENTED if self.has_trusted else None

    def injected_value(self, value: str) -> bool:
        """Whether an untrusted value sits in the text around an instruction cue (each of its
        tokens the user did not say does)."""
        if not self.injected:
            return False
        n = norm(value)
        if n and self._k(n) in self.injected:
            return True
        parts = [p for p in tokens(value) if p not in _SCHEMES]
        if self.key is not None:
            parts = [p for p in parts if len(p) >= MIN_FLOW_TOKEN]
        keys = [k for p in parts if (k := self._k(p)) not in self.trusted]
        return len(parts) > 1 and bool(keys) and all(k in self.injected for k in keys)

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
    verb_classes: Iterable[str] = (),
) -> dict[str, Any]:
    """The provenance and data-flow facts of a call's parameters (all unknown without a
    conversation). `verb_classes`: every class the call's name names (``requested_action``)."""
    if conversation is None:
        return {
            "provenance": None,
            "destination_provenance": None,
            "untrusted_value_count": 0,
            "invented_value_count": 0,
            "instruction_in_tool_result": None,
            "request_in_tool_result": None,
            "requested_action": None,
            "injected_value_count": 0,
            "injected_destination": None,
            "injected_flow_count": 0,
            "flow_token_count": 0,
            "exfiltration": None,
        }
    dest = set(destination_paths)
    overall = dest_prov = None
    untrusted = invented = injected = 0
    injected_dest = False
    flowed: set[str] = set()
    for path, kws, value in _leaves(params):
        if isinstance(value, bool) or value is None:
            continue
        where: str | None = None
        is_dest = path in dest
        probe = ""
        if isinstance(value, int | float):
            if kws & _MONEY_WORDS:
                probe = f"{value:g}"
                where = conversation.locate(probe)
        elif isinstance(value, str):
            s = value.strip()
            if is_dest or (
                len(s) <= 128
                and (" " not in s or kws & _MONEY_WORDS)
                and (kws & _CREDENTIAL_WORDS or any(c.isdigit() or c in "@/" for c in s))
            ):
                probe = s
                where = conversation.locate(s)
            elif " " in s:
                flowed |= conversation.flowed(s)
        if where is None:
            continue
        untrusted += where == UNTRUSTED
        invented += where == INVENTED
        if where == UNTRUSTED and conversation.injected_value(probe):
            injected += 1
            injected_dest = injected_dest or is_dest
        overall = _worse(overall, where)
        if is_dest:
            dest_prov = _worse(dest_prov, where)
    outbound = verb_class in _OUTBOUND
    families = {_FAMILY.get(c) for c in (verb_class, *verb_classes)} - {None}
    requested = bool(families & conversation.requested) if conversation.has_trusted else None
    return {
        "provenance": overall,
        "destination_provenance": dest_prov,
        "untrusted_value_count": untrusted,
        "invented_value_count": invented,
        "instruction_in_tool_result": conversation.instruction,
        "request_in_tool_result": conversation.request,
        "requested_action": requested,
        "injected_value_count": injected,
        "injected_destination": injected_dest,
        "injected_flow_count": len(flowed & conversation.injected),
        "flow_token_count": len(flowed),
        "exfiltration": outbound and bool(flowed),
    }


class SessionFlow:
    """What one session's tool results left behind, for the MCP path: salted digests of their
    tokens (6+ characters, at most ``limit``) and whether any carried instruction cues. A result
    with instruction cues counts as injected as a whole (its digests are all the gate receives
    from a recorder in another process, so both sides keep the same)."""

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
        if cue:
            mine = {key(t) for t in tokens(text) if len(t) >= MIN_FLOW_TOKEN}
            conv.injected.update(k for k in mine if k in conv.untrusted)
        conv.request = conv.request or has_request(text)
        return keys, cue

    def merge(self, digests: Iterable[str], instruction: bool) -> None:
        """What another process's :meth:`add_result` found (salted with the same salt)."""
        conv = self.conversation
        room = self._limit - len(conv.untrusted)
        kept = list(digests)[:room] if room > 0 else []
        conv.untrusted.update(kept)
        if instruction:
            conv.injected.update(kept)
        conv.instruction = conv.instruction or instruction
