"""Action risk scoring: a pure, deterministic, explainable engine (DESIGN.md §8).

Imports neither Litestar nor mitmproxy nor psycopg, so the API and the proxy can both call it.
"""

from api.scoring.engine import SCORER_VERSION, Engine
from api.scoring.llm_fallback import LLMConfig
from api.scoring.models import (
    ActionEvent,
    HistoryFacts,
    HistoryQuery,
    ScoreComponent,
    ScoreResult,
    ValidationError,
    Violation,
    convert_action_event,
    decode_action_event,
)
from api.scoring.rules import RuleError

__all__ = [
    "SCORER_VERSION",
    "ActionEvent",
    "Engine",
    "HistoryFacts",
    "HistoryQuery",
    "LLMConfig",
    "RuleError",
    "ScoreComponent",
    "ScoreResult",
    "ValidationError",
    "Violation",
    "convert_action_event",
    "decode_action_event",
]
