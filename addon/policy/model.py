"""The policy vocabulary (fields, actions, risk levels) and the records rules produce."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from addon.conditions import ALIASES, OPERATORS, Condition, FieldType
from addon.yaml_lines import SourceError
from api.scoring.bands import RISK_LEVELS

__all__ = [
    "ACTIONS",
    "ALIASES",
    "DIRECTIONS",
    "FIELDS",
    "OPERATORS",
    "RISK_LEVELS",
    "Action",
    "BlockVerdict",
    "Condition",
    "Decision",
    "PolicyContext",
    "PolicyError",
    "Rule",
]

Action = Literal["block", "redact", "tag", "log"]
ACTIONS: Final[tuple[str, ...]] = ("block", "redact", "tag", "log")

#: ``RISK_LEVELS`` (api/scoring/bands.py) is ordered: gt/gte/lt/lte on ``risk_level`` compare by it.

DIRECTIONS: Final[tuple[str, ...]] = ("request", "response")
#: Where the values steering a scored call came from (api/scoring/provenance.py).
PROVENANCES: Final[tuple[str, ...]] = ("trusted", "untrusted", "invented")
#: Whom a scored call is directed at (api/scoring/facts.py, ``destination``).
DESTINATIONS: Final[tuple[str, ...]] = ("internal", "external")

_STRING = FieldType("string")
_NUMBER = FieldType("number")

#: Every field a policy condition may test, with its type (docs/policy.md, "Fields").
FIELDS: Final[dict[str, FieldType]] = {
    "agent_id": _STRING,
    "agent_name": _STRING,
    "model": _STRING,
    "provider": _STRING,
    "endpoint": _STRING,
    "token_count": _NUMBER,
    "cost_usd": _NUMBER,
    "pii_detected": FieldType("boolean"),
    "pii_types": FieldType("list"),
    "tool_name": _STRING,
    "direction": FieldType("string", DIRECTIONS),
    "risk_level": FieldType("level", RISK_LEVELS, name="risk level"),
    # What the inline score of an MCP tools/call read in its arguments and conversation.
    "provenance": FieldType("string", PROVENANCES),
    "destination": FieldType("string", DESTINATIONS),
}

DEFAULT_COMPLIANCE_TAG: Final = "default"


class PolicyError(SourceError):
    """A policy file that cannot be used; ``str()`` reads ``path:line: message``."""


class Rule(msgspec.Struct, frozen=True):
    """One validated rule as written in the file (disabled rules included)."""

    name: str
    action: Action
    conditions: tuple[Condition, ...]
    message: str | None
    tag: str | None
    enabled: bool
    line: int


class BlockVerdict(msgspec.Struct, frozen=True):
    """The first blocking rule that matched, and the message for the 403 body."""

    rule: str
    message: str


class Decision(msgspec.Struct):
    """What the rules say about one call.

    ``tags`` are in file order; the event's ``compliance_tag`` is the last one, or ``"default"``.
    """

    block: BlockVerdict | None = None
    redact: bool = False
    tags: list[str] = msgspec.field(default_factory=list)
    logs: list[str] = msgspec.field(default_factory=list)
    matched: list[str] = msgspec.field(default_factory=list)

    @property
    def compliance_tag(self) -> str:
        """The tag recorded on the event: the last tag set, else ``"default"``."""
        return self.tags[-1] if self.tags else DEFAULT_COMPLIANCE_TAG


class PolicyContext(msgspec.Struct, kw_only=True):
    """The facts a rule may test. ``None`` means unknown (a condition on it is false, but neq)."""

    agent_id: str | None = None
    agent_name: str | None = None
    model: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    token_count: int | None = None
    cost_usd: float | None = None
    pii_detected: bool | None = None
    pii_types: list[str] | None = None
    tool_name: str | None = None
    direction: str | None = None
    risk_level: str | None = None
    provenance: str | None = None
    destination: str | None = None
