"""The trust of each text of an LLM request, for the provenance of the tool calls it produces.

The provider parsers already cut a request into text segments named by JSON path
(``RequestInfo.text``) and note each message's role (``RequestInfo.roles``). What the user and the
system (or developer) wrote is trusted; what a tool returned is untrusted; the model's own turns
(assistant text, earlier tool-call arguments) are neither and are not indexed:

    path                                        dialect           trust
    $.system…, $.instructions, $.input          Anthropic, OpenAI trusted
    $.messages[i]… (role system/developer/user) Chat, Anthropic   trusted
    $.messages[i]… (role tool/function)         Chat              untrusted
    $.messages[i].content[j].content…           Anthropic         untrusted (a tool_result block)
    $.input[i].output…                          Responses         untrusted (function_call_output)
    $.input[i].content… (role user/system/…)    Responses         trusted

Dialects without roles give no conversation, and the provenance facts stay unknown. The system's
(and developer's) texts are *standing* instructions: trusted for provenance, but their verbs say
what the user asked for only when the request holds no user message.
"""

from __future__ import annotations

import re
from typing import Final

from addon.providers import RequestInfo
from api.scoring.provenance import TRUSTED, UNTRUSTED, Conversation

_MESSAGE_RE: Final = re.compile(r"^\$\.(messages|input)\[(\d+)\](.*)$")
_TRUSTED_ROLES: Final = frozenset({"system", "developer", "user"})
_TOOL_ROLES: Final = frozenset({"tool", "function", "ipython"})
_TOP_TRUSTED: Final = ("$.system", "$.instructions")


_STANDING_ROLES: Final = frozenset({"system", "developer"})


def is_standing(path: str, roles: list[str]) -> bool:
    """A trusted text of the system or developer (standing instructions), not the user's."""
    if path.startswith(_TOP_TRUSTED):
        return True
    m = _MESSAGE_RE.match(path)
    if m is None:
        return False
    i = int(m.group(2))
    return i < len(roles) and roles[i] in _STANDING_ROLES


def segment_trust(path: str, roles: list[str]) -> str | None:
    """trusted, untrusted, or None (the model's own words, or a path no rule knows)."""
    if path.startswith(_TOP_TRUSTED) or path == "$.input":
        return TRUSTED
    m = _MESSAGE_RE.match(path)
    if m is None:
        return None
    i, rest = int(m.group(2)), m.group(3)
    if m.group(1) == "input" and rest.startswith(".output"):
        return UNTRUSTED
    role = roles[i] if i < len(roles) else ""
    if role in _TOOL_ROLES:
        return UNTRUSTED
    if role in _TRUSTED_ROLES:
        # An Anthropic tool_result block rides in a user message: ``.content[j].content``.
        if re.match(r"^\.content\[\d+\]\.content", rest):
            return UNTRUSTED
        if rest.endswith((".arguments", ".input")):
            return None
        return TRUSTED
    return None


def conversation_of(info: RequestInfo) -> Conversation | None:
    """The request's texts indexed by trust, once; None when the dialect gives no roles."""
    if not info.roles or not info.text:
        return None
    conv = Conversation()
    for path, text in info.text:
        trust = segment_trust(path, info.roles)
        if trust is not None:
            conv.add(trust, text, standing=trust == TRUSTED and is_standing(path, info.roles))
    return conv
