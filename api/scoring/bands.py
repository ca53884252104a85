"""Score bands: where each risk level starts (DESIGN.md §8).

none      1-9     routine reads of public or internal data
low      10-34    ordinary writes, reads of personal data in scope
medium   35-59    sensitive data handled, unusual but explainable behaviour
high     60-79    destructive, privileged or outbound handling of sensitive data
critical 80-100   exfiltration chains, secrets leaving, destruction in production

The one definition of the risk levels and their order: the scoring engine, the scores API and the
proxy's policies (``risk_level`` conditions) all take them from here. Pure code, no imports
beyond the standard library, so every side may share it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

RiskLevel = Literal["none", "low", "medium", "high", "critical"]
Severity = Literal["low", "medium", "high", "critical"]

#: The risk levels, least severe first.
RISK_LEVELS: Final[tuple[RiskLevel, ...]] = get_args(RiskLevel)
#: The severities a rule's violation may carry (every risk level but ``none``).
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)
#: Rank of each level; comparisons on levels (``gte high``) compare these.
LEVEL_ORDER: Final[dict[str, int]] = {level: i for i, level in enumerate(RISK_LEVELS)}

LEVEL_FLOORS: tuple[tuple[int, RiskLevel], ...] = (
    (80, "critical"),
    (60, "high"),
    (35, "medium"),
    (10, "low"),
    (1, "none"),
)
# A violation of a given severity holds the score at least at the bottom of the matching band,
# so a critical finding can never be averaged away by a low intrinsic risk.
SEVERITY_FLOOR: dict[Severity, int] = {"low": 10, "medium": 35, "high": 60, "critical": 80}

assert tuple(level for _, level in reversed(LEVEL_FLOORS)) == RISK_LEVELS, "a band per level"
assert tuple(SEVERITY_FLOOR) == SEVERITIES == RISK_LEVELS[1:], "a floor per severity"


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
