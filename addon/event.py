"""The event row the proxy writes: one msgspec Struct whose field order is the COPY column order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Event(msgspec.Struct, gc=False, kw_only=True):
    """One row of ``events`` (sql/001_events.sql + 006). Field order == ``COLUMNS`` == COPY order.

    Columns added after the first schema go at the end and into ``ADDED_COLUMNS``: the lineage
    hash covers them only up to the last one that is set, so chains stored before they existed
    still verify (addon/lineage.py).
    """

    id: str
    parent_id: str | None = None
    agent_id: str
    session_id: str
    timestamp: datetime
    direction: str  # "request" | "response"
    provider: str | None = None
    endpoint: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: str = "missing"
    cost_usd: float | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    compliance_tag: str = "default"
    pii_detected: bool = False
    pii_types: list[str] = []
    pii_findings: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    policy_decisions: list[dict[str, Any]] | None = None
    error: str | None = None
    parse_error: str | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    seq: int = 0
    prev_hash: str = ""
    lineage_hash: str = ""
    # sql/006_event_host_method_sanitized.sql
    host: str | None = None  # the host the call went to
    method: str | None = None  # its HTTP method
    #: Fields whose text was escaped to be storable (addon/sanitize.py): path -> original sizes.
    sanitized: dict[str, dict[str, int]] | None = None


COLUMNS: tuple[str, ...] = Event.__struct_fields__

# PostgreSQL type names for binary COPY (which casts nothing): one per column, same order.
PG_TYPES: tuple[str, ...] = (
    "text", "text", "text", "text", "timestamptz", "text", "text", "text", "text",
    "int4", "int4", "int4", "int4", "int4", "text", "float8", "int4", "float8", "float8",
    "text", "bool", "text[]", "jsonb", "jsonb", "jsonb", "text", "text", "int8", "int8",
    "int8", "text", "text", "text", "text", "jsonb",
)  # fmt: skip

JSON_COLUMNS = frozenset({"pii_findings", "tool_calls", "policy_decisions", "sanitized"})

#: Columns that came after the first schema, in order; always the tail of ``COLUMNS``.
ADDED_COLUMNS: tuple[str, ...] = ("host", "method", "sanitized")

assert len(PG_TYPES) == len(COLUMNS), "PG_TYPES must list one type per Event field"
assert COLUMNS[-len(ADDED_COLUMNS) :] == ADDED_COLUMNS, "added columns go at the end"
