"""The verb of an action and its class; the word lists of vocabulary.yaml.

Verb classes and their base risk (the first factor of the intrinsic score); the full word lists
are in vocabulary.yaml:

    class      base  verbs (which word decides: `primary_verb`, precedence in vocabulary.yaml)
    read          5  read get list search query view fetch describe find calculate navigate …
    write        12  write update create put patch edit save commit push reserve cancel book …
    send         20  send post publish share email notify message forward reply invite upload …
    export       20  export download dump backup sync copy transfer extract replicate
    payment      20  pay withdraw deposit refund purchase buy sell order charge invest trade
    delete       25  delete remove drop destroy purge truncate wipe erase terminate kill reset
    deploy       30  deploy release rollout migrate restart scale provision configure disable
    execute      40  execute exec run eval invoke shell spawn script
    privilege    40  authorize grant escalate impersonate elevate approve assume sudo unlock …
    install      40  install uninstall plugin
    unknown       8  no verb, or only a generic one ("call", "manage"): neutral, confidence drops
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import msgspec
import yaml

from api.scoring.fields import words
from api.scoring.models import Classification

VERB_BASE: dict[str, float] = {
    "read": 5.0,
    "write": 12.0,
    "send": 20.0,
    "export": 20.0,
    "payment": 20.0,
    "delete": 25.0,
    "deploy": 30.0,
    "execute": 40.0,
    "privilege": 40.0,
    "install": 40.0,
    "unknown": 8.0,
}

VOCABULARY_FILE = Path(__file__).with_name("vocabulary.yaml")


class Vocabulary(msgspec.Struct, frozen=True):
    """The word lists of vocabulary.yaml."""

    verbs: dict[str, list[str]]
    generic_verbs: list[str]
    noun_verbs: list[str]
    scope_classes: dict[Classification, list[str]]
    egress_domains: list[str]
    external_words: list[str]


def load_vocabulary(path: Path = VOCABULARY_FILE) -> Vocabulary:
    """Load the vocabulary; a verb class without a base risk is an error."""
    vocab = msgspec.convert(yaml.safe_load(path.read_text(encoding="utf-8")), Vocabulary)
    unknown = set(vocab.verbs) - set(VERB_BASE)
    if unknown:
        raise ValueError(f"{path}: verb classes without a base risk: {sorted(unknown)}")
    return vocab


VOCABULARY = load_vocabulary()
VERB_CLASS: dict[str, str] = {w: cls for cls, ws in VOCABULARY.verbs.items() for w in ws}
GENERIC_VERBS = frozenset(VOCABULARY.generic_verbs)
NOUN_VERBS = frozenset(VOCABULARY.noun_verbs)
#: The verbs of ``tool:<name>:<verb>`` that only say "a tool was used": the name decides.
_TOOL_CALL_VERBS = GENERIC_VERBS | {"invoke"}
_SCOPE_CLASSES: dict[str, str] = {w: c for c, ws in VOCABULARY.scope_classes.items() for w in ws}


class Verb(NamedTuple):
    """The verb of an action: the deciding word, its class, every class the name names, and
    where the deciding word came from (``name``, ``arguments`` or ``none``)."""

    word: str
    cls: str
    classes: frozenset[str]
    source: str


@lru_cache(maxsize=8192)
def _name_verbs(name: str) -> tuple[tuple[str, ...], str]:
    """(verb words in deciding order, the word named when none is known) of a name; see
    vocabulary.yaml for the order."""
    # "object.verb": the last dotted segment first, then the others from the right.
    segments = [words(seg) for seg in reversed(name.split("."))]
    ordered = [w for seg in segments for w in seg if w in VERB_CLASS or w in GENERIC_VERBS]
    fallback = next((seg[-1] for seg in segments if seg), name)
    return tuple(ordered), fallback


def primary_verb(name: str, arg_verbs: Iterable[str] = ()) -> Verb:
    """The verb of a tool name or dotted action verb: the first verb word wins (the last dotted
    segment of "object.verb" first); a noun-like verb word ("email") only when no plain verb
    follows; a generic verb defers to the next one, then to a verb given in the arguments; no
    verb at all is "unknown" (a neutral base, never execute). Precedence: vocabulary.yaml."""
    ordered, fallback = _name_verbs(name)
    classes = frozenset(VERB_CLASS[w] for w in ordered if w in VERB_CLASS)
    generic = noun = ""
    for w in ordered:
        if w in GENERIC_VERBS:
            generic = generic or w
        elif w in NOUN_VERBS:
            noun = noun or w  # decides only if no plain verb follows
        else:
            return Verb(w, VERB_CLASS[w], classes, "name")
    if noun:
        return Verb(noun, VERB_CLASS[noun], classes, "name")
    for w in arg_verbs:
        cls = VERB_CLASS.get(w)
        if cls is not None:
            return Verb(w, cls, classes | {cls}, "arguments")
    word = generic or fallback
    return Verb(word, "unknown", classes, "none")


def verb_class_of(verb: str) -> tuple[str, str]:
    """(deciding verb word, class) of an action's verb part (see `primary_verb`)."""
    v = primary_verb(verb)
    return v.word, v.cls


def action_verb(domain: str, scope: str, verb: str, arg_verbs: Iterable[str] = ()) -> Verb:
    """The verb of a whole action: for ``tool:<name>:call`` (an LLM's tool call as the proxy
    records it) the generic verb says nothing, so the tool's name decides."""
    if domain == "tool" and verb.lower() in _TOOL_CALL_VERBS:
        return primary_verb(scope, arg_verbs)
    return primary_verb(verb, arg_verbs)


def action_data_classes(domain: str, scope: str, verb: str) -> tuple[set[str], set[str]]:
    """(data classes an action's name implies, classes only its MCP server's name implies).

    An MCP action is ``mcp:<server>:<tool>``: class words in a server's name ("banking") decide
    nothing on their own, the tool's name does."""
    if domain == "mcp":
        return scope_classes(verb), scope_classes(scope)
    return scope_classes(scope), set()


def scope_classes(scope: str) -> set[str]:
    """Data classes implied by the words of a scope or resource type."""
    return {c for w in words(scope) if (c := _SCOPE_CLASSES.get(w)) is not None}
