"""Wire shapes of the scoring routes (msgspec Structs in and out).

The event itself is `api.scoring.ActionEvent` (seeds/003); these are the envelopes around it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from api.scoring import ScoreComponent, ScoreResult, Violation
from api.scoring.bands import RISK_LEVELS, RiskLevel
from api.scoring.models import ScoringSource

MAX_BATCH = 1000


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /events/batch` body; events stay raw so each is validated (and stored) as sent."""

    events: list[msgspec.Raw]


class BatchAccepted(msgspec.Struct):
    """`POST /events/batch` answer (202): ids in the order sent, duplicates removed."""

    event_ids: list[str]
    count: int


class EventQueued(msgspec.Struct):
    """`POST /events` (202) for an id accepted by a batch and not scored (yet, or ever)."""

    event_id: str
    status: Literal["pending", "failed"]


class EventScored(msgspec.Struct):
    """`POST /events` answer: the explained score (the same body on an idempotent repeat)."""

    event_id: str
    status: Literal["scored"]
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

    @classmethod
    def from_result(cls, r: ScoreResult) -> EventScored:
        return cls(
            event_id=r.event_id,
            status="scored",
            score=r.score,
            risk_level=r.risk_level,
            confidence=r.confidence,
            reasoning=r.reasoning,
            violations=r.violations,
            compliance_refs=r.compliance_refs,
            mitigations=r.mitigations,
            score_components=r.score_components,
            scoring_source=r.scoring_source,
            scorer_version=r.scorer_version,
        )


class ScoreDetail(msgspec.Struct):
    """One stored score with the action it belongs to (`GET /scores/...`)."""

    event_id: str
    customer_id: str
    action: str
    agent_id: str | None
    session_id: str | None
    timestamp: datetime | None
    received_at: datetime
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
    scored_at: datetime


class LevelCounts(msgspec.Struct):
    """Scores per risk level (every level present, zero included)."""

    none: int = 0
    low: int = 0
    medium: int = 0
    high: int = 0
    critical: int = 0


# Spelled out for the OpenAPI schema and mypy; the levels themselves live in api/scoring/bands.py.
assert LevelCounts.__struct_fields__ == RISK_LEVELS, "one count per risk level"


class ScoreSummary(msgspec.Struct):
    """`GET /scores/{customer_id}/summary`; `average` is null when there are no scores."""

    customer_id: str
    total: int
    average: float | None
    by_level: LevelCounts
    pending: int
    failed: int


class CustomerSummary(ScoreSummary):
    """One customer's line of `GET /api/v1/scores/customers`: the summary, and its latest score."""

    last_scored_at: datetime | None
