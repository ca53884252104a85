"""Typed records for action risk scoring: the input event, history facts and the result.

The event schema follows `seeds/003…` exactly. Only `event_id` and `action` are required, because
the batch endpoint accepts events that carry nothing more than an id, an action and a timestamp.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

# Re-exported: the levels are defined once, in bands.py; older imports name this module.
from api.scoring.bands import RiskLevel as RiskLevel
from api.scoring.bands import Severity as Severity

Classification = Literal[
    "public", "internal", "pii", "pii_sensitive", "financial", "health", "auth", "legal"
]
ScoringSource = Literal["rules", "rules+llm", "rules:llm_failed"]
ComponentSource = Literal["intrinsic", "rule", "llm"]

# domain:scope:verb; the scope may hold dots, dashes and slashes ("org/repo"), the verb may be
# dotted ("pr.create"). msgspec patterns are unanchored searches, hence ^…$.
ACTION_PATTERN = r"^[A-Za-z0-9_][\w.\-]*:[\w.\-/]+:[\w][\w.\-]*$"

ShortStr = Annotated[str, msgspec.Meta(max_length=512)]
ActionStr = Annotated[str, msgspec.Meta(pattern=ACTION_PATTERN, max_length=256)]
Sensitivity = Annotated[int, msgspec.Meta(ge=0, le=4)]


class _Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for our own inputs: unknown fields are a client error, not silently dropped."""


class AgentInfo(_Input):
    """The agent that performed the action."""

    agent_id: ShortStr | None = None
    agent_type: ShortStr | None = None
    framework: ShortStr | None = None
    model: ShortStr | None = None


class SessionInfo(_Input):
    """The session the action belongs to."""

    session_id: ShortStr | None = None
    user_id: ShortStr | None = None
    started_at: datetime | None = None


class TargetInfo(_Input):
    """The resource acted upon; `sensitivity_level` runs from 0 (public) to 4 (restricted)."""

    resource_type: ShortStr | None = None
    resource_id: ShortStr | None = None
    sensitivity_level: Sensitivity | None = None


class McpContext(_Input):
    """The MCP server through which the action was performed, when there is one."""

    server_name: ShortStr | None = None
    server_id: ShortStr | None = None
    transport: ShortStr | None = None
    is_verified: bool | None = None
    tool_name: ShortStr | None = None


class DataField(_Input):
    """A data field with an explicit classification (which wins over the name table)."""

    field: ShortStr
    classification: Classification | None = None


class ActionEvent(_Input):
    """One agent action to score (`POST /events` body, one item of `POST /events/batch`)."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    action: ActionStr
    timestamp: datetime | None = None
    agent: AgentInfo | None = None
    session: SessionInfo | None = None
    target: TargetInfo | None = None
    mcp_context: McpContext | None = None
    data_fields_accessed: Annotated[list[ShortStr | DataField], msgspec.Meta(max_length=1000)] = (
        msgspec.field(default_factory=list)
    )
    preceding_actions: Annotated[list[ShortStr], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class HistoryFacts(msgspec.Struct, kw_only=True):
    """What the database knows about this agent; `None` means "not looked up / unknown"."""

    first_use_of_server: bool | None = None
    first_use_of_resource: bool | None = None
    # The agent's action rate over the last hour divided by its baseline rate.
    rate_vs_baseline: float | None = None
    # The agent's recent actions from the database, oldest first.
    recent_actions: list[str] = msgspec.field(default_factory=list)
    # Salted digests of the destinations the agent already dealt with (its counterparties), as
    # `Engine.counterparties` returns them; None when not tracked.
    known_counterparties: list[str] | None = None


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The keys the service should look up to build `HistoryFacts` for an event."""

    agent_id: str | None
    server_key: str | None
    resource_key: str | None


class Violation(msgspec.Struct, kw_only=True):
    """One compliance violation: a rule, the framework reference it breaks and why."""

    rule_id: str
    framework: str
    ref: str
    severity: Severity
    explanation: str


class ScoreComponent(msgspec.Struct, kw_only=True):
    """One contribution to the score, so every point can be traced to its source."""

    source: ComponentSource
    name: str
    value: float
    detail: str


class ScoreResult(msgspec.Struct, kw_only=True):
    """The explained risk score of one action."""

    event_id: str
    score: int
    risk_level: RiskLevel
    confidence: float
    reasoning: str
    violations: list[Violation]
    compliance_refs: list[str]
    mitigations: list[str]
    score_components: list[ScoreComponent]
    scoring_source: ScoringSource
    scorer_version: str


class ValidationError(ValueError):
    """An event failed validation; `path` names the offending field (e.g. `target.sensitivity_level`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


_DECODER = msgspec.json.Decoder(ActionEvent)
_PATH_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _split_msgspec_error(exc: Exception) -> ValidationError:
    """Turn msgspec's "… - at `$.a.b`" message into a path and a message."""
    m = _PATH_RE.match(str(exc))
    assert m is not None  # the pattern matches any string
    path = (m.group("path") or "").lstrip(".")
    message = m.group("msg")
    if "matching regex" in message and path == "action":
        message = "action must be domain:scope:verb (three non-empty colon-separated parts)"
    elif message.startswith(("Object missing required field", "Object contains unknown field")):
        # msgspec reports the missing field in the message, not the path.
        field = message.split("`")[1] if "`" in message else ""
        path = f"{path}.{field}".lstrip(".") if field else path
        message = "field required" if "missing" in message else "unknown field"
    return ValidationError(path, message)


def decode_action_event(raw: bytes) -> ActionEvent:
    """Decode and validate one JSON event; raises `ValidationError` naming the field at fault."""
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise _split_msgspec_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise ValidationError("", f"malformed JSON: {exc}") from exc


def convert_action_event(obj: object) -> ActionEvent:
    """Validate an already-parsed JSON object (e.g. one item of a batch) as an event."""
    try:
        return msgspec.convert(obj, ActionEvent)
    except msgspec.ValidationError as exc:
        raise _split_msgspec_error(exc) from exc
