"""Score bands: where each risk level starts (DESIGN.md §8).

none      1-9     routine reads of public or internal data
low      10-34    ordinary writes, reads of personal data in scope
medium   35-59    sensitive data handled, unusual but explainable behaviour
high     60-79    destructive, privileged or outbound handling of sensitive data
critical 80-100   exfiltration chains, secrets leaving, destruction in production
"""

from __future__ import annotations

from api.scoring.models import RiskLevel, Severity

LEVEL_FLOORS: tuple[tuple[int, RiskLevel], ...] = (
    (80, "critical"),
    (60, "high"),
    (35, "medium"),
    (10, "low"),
    (1, "none"),
)
LEVEL_ORDER: dict[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
# A violation of a given severity holds the score at least at the bottom of the matching band,
# so a critical finding can never be averaged away by a low intrinsic risk.
SEVERITY_FLOOR: dict[Severity, int] = {"low": 10, "medium": 35, "high": 60, "critical": 80}


def clamp_score(value: float) -> int:
    """Round and clamp a raw score to 1..100."""
    return max(1, min(100, round(value)))


def risk_level_for(score: int) -> RiskLevel:
    """The risk level of a 1..100 score."""
    for floor, level in LEVEL_FLOORS:
        if score >= floor:
            return level
    return "none"


def distance_to_boundary(score: int) -> int:
    """How far a score is from the nearest band edge (small means the level is a close call)."""
    edges = [floor for floor, _ in LEVEL_FLOORS if floor > 1]
    return min(min(abs(score - e), abs(score - (e - 1))) for e in edges)
