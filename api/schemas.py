"""What the API sends and accepts: msgspec Structs, one per resource shape (seeds 000/001)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

AgentStatus = Literal["active", "blocked", "retired"]
Direction = Literal["request", "response"]


class EventOut(msgspec.Struct):
    """One event as the API shows it: the seed's fields first, then every other column.

    Field order matches ``api.db.EVENT_SELECT`` so rows convert positionally.
    """

    id: str
    agent_id: str
    session_id: str
    timestamp: datetime
    direction: str
    model: str | None
    provider: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    compliance_tag: str
    lineage_hash: str
    pii_detected: bool
    pii_types: list[str]
    parent_id: str | None
    endpoint: str | None
    status_code: int | None
    latency_ms: float | None
    ttfb_ms: float | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    usage_source: str
    tool_calls: list[dict[str, Any]] | None
    policy_decisions: list[dict[str, Any]] | None
    pii_findings: list[dict[str, Any]] | None
    error: str | None
    parse_error: str | None
    request_bytes: int | None
    response_bytes: int | None
    seq: int
    prev_hash: str
    host: str | None
    method: str | None
    #: Fields whose NUL or lone surrogates were escaped (``\u0000``, ``\\`` for a backslash) to be
    #: storable: path -> ``{"bytes": original UTF-8 length}`` (``key_bytes`` for a JSON key).
    sanitized: dict[str, dict[str, int]] | None


EVENT_FIELDS: tuple[str, ...] = EventOut.__struct_fields__


class AgentOut(msgspec.Struct):
    """One registered agent (seed 001); ``last_seen_at`` and ``identity_kind`` are extras."""

    id: str
    name: str
    source_ip: str | None
    status: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None
    identity_kind: str | None


AGENT_FIELDS: tuple[str, ...] = AgentOut.__struct_fields__


class AgentUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PUT /api/v1/agents/{id}``: either field or both; ``metadata`` replaces."""

    status: AgentStatus | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class RetireOut(msgspec.Struct, kw_only=True):
    """Answer of ``POST /api/v1/agents/{id}/retire``, exactly the seed's three fields."""

    id: str
    status: str
    updated_at: datetime


class SessionOut(msgspec.Struct):
    """One row of ``sessions``: the chain head and counters the writer keeps."""

    id: str
    agent_id: str
    started_at: datetime
    last_event_at: datetime
    event_count: int
    head_seq: int
    head_hash: str | None


SESSION_FIELDS: tuple[str, ...] = SessionOut.__struct_fields__


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every error: ``{"error": "..."}``, plus ``field`` when one input is at fault."""

    error: str
    field: str | None = None


class HealthOut(msgspec.Struct, kw_only=True):
    """``/health`` and ``/ready``."""

    status: str
    database: str | None = None
