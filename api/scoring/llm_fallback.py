"""Optional LLM second opinion for low-confidence scores (off by default).

Any OpenAI-compatible endpoint: `POST {base_url}/chat/completions`, asked for a JSON object
`{"score": 1-100, "risk_level": "...", "rationale": "..."}`. The prompt carries facts only: action,
classes, flags and rule findings; never parameter values, resource ids or field contents.

Merge: final = (1 - w) x rule score + w x LLM score with w = min(0.5, 1 - confidence), so the less
sure the rules are, the more the LLM counts, and it never decides alone; the result can still not
fall below the floor set by the most severe rule violation. Any failure (HTTP error, timeout, a
body that is not the JSON asked for) keeps the rule score, with `scoring_source`
"rules:llm_failed" and the reason in `reasoning`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from api.scoring.bands import LEVEL_ORDER, SEVERITY_FLOOR, RiskLevel, clamp_score, risk_level_for
from api.scoring.models import ScoreComponent, ScoreResult

DEFAULT_THRESHOLD = 0.8
MAX_LLM_WEIGHT = 0.5

SYSTEM_PROMPT = (
    "You are a security analyst scoring the risk of one action taken by an AI agent. You get "
    "facts extracted from the action and the findings of a rule engine. Answer with a JSON "
    'object only: {"score": <integer 1-100>, "risk_level": "none|low|medium|high|critical", '
    '"rationale": "<one or two sentences>"}. Bands: none 1-9, low 10-34, medium 35-59, '
    "high 60-79, critical 80-100. Ground your answer in GDPR, HIPAA, SOC 2, PCI DSS, "
    "ISO 27001, the EU AI Act and the OWASP LLM and agentic top 10."
)


class LLMConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to ask; `enabled` is False unless the operator turns it on."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 5.0
    enabled: bool = False
    threshold: float = DEFAULT_THRESHOLD

    def __repr__(self) -> str:  # never print the key
        return (
            f"LLMConfig(base_url={self.base_url!r}, model={self.model!r}, enabled={self.enabled})"
        )


class LLMVerdict(msgspec.Struct, kw_only=True):
    """What the model must answer."""

    score: Annotated[int, msgspec.Meta(ge=1, le=100)]
    risk_level: RiskLevel
    rationale: Annotated[str, msgspec.Meta(max_length=4000)] = ""


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Completion(msgspec.Struct):
    """View of a chat completion: only what we read (providers add fields freely)."""

    choices: list[_Choice]


class LLMFallbackError(Exception):
    """The LLM could not give a usable verdict; the message says why (no secrets in it)."""


_FENCE_RE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_COMPLETION = msgspec.json.Decoder(_Completion)
_VERDICT = msgspec.json.Decoder(LLMVerdict)


def build_request(config: LLMConfig, payload: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    """(url, headers, body) of the chat completion request for a facts payload."""
    url = config.base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    body = msgspec.json.encode(
        {
            "model": config.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": msgspec.json.encode(payload).decode()},
            ],
        }
    )
    return url, headers, body


def parse_response(status: int, content: bytes) -> LLMVerdict:
    """Extract the verdict from a chat completion response; raises LLMFallbackError."""
    if status != 200:
        raise LLMFallbackError(f"HTTP {status} from LLM endpoint")
    try:
        completion = _COMPLETION.decode(content)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise LLMFallbackError(f"response is not a chat completion ({exc})") from exc
    if not completion.choices or not completion.choices[0].message.content:
        raise LLMFallbackError("chat completion has no message content")
    text = completion.choices[0].message.content
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return _VERDICT.decode(text.encode())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise LLMFallbackError(f"model answer is not the JSON verdict asked for ({exc})") from exc


async def consult_async(config: LLMConfig, payload: dict[str, Any]) -> LLMVerdict:
    """Ask the LLM (async); raises LLMFallbackError on any failure."""
    import httpx  # imported here: the proxy loads the engine but never calls the LLM

    url, headers, body = build_request(config, payload)
    try:
        async with httpx.AsyncClient(timeout=config.timeout) as client:
            response = await client.post(url, headers=headers, content=body)
    except httpx.TimeoutException as exc:
        raise LLMFallbackError(f"LLM timed out after {config.timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise LLMFallbackError(f"LLM request failed: {type(exc).__name__}") from exc
    return parse_response(response.status_code, response.content)


def should_consult(result: ScoreResult, config: LLMConfig | None) -> bool:
    """Whether the fallback applies: configured, enabled and the rules are not sure enough."""
    return config is not None and config.enabled and result.confidence < config.threshold


def merge_verdict(result: ScoreResult, verdict: LLMVerdict) -> ScoreResult:
    """Blend the LLM's score into the rule result and record it as an "llm" component."""
    weight = min(MAX_LLM_WEIGHT, 1.0 - result.confidence)
    blended = (1.0 - weight) * result.score + weight * verdict.score
    floor = max((SEVERITY_FLOOR[v.severity] for v in result.violations), default=1)
    final = max(clamp_score(blended), floor)
    level = risk_level_for(final)
    agrees = abs(LEVEL_ORDER[verdict.risk_level] - LEVEL_ORDER[result.risk_level]) <= 1
    confidence = round(min(0.95, result.confidence + (0.15 if agrees else 0.0)), 2)
    rationale = verdict.rationale.strip().replace("\n", " ")[:300]
    component = ScoreComponent(
        source="llm",
        name="llm_fallback",
        value=float(final - result.score),
        detail=(
            f"LLM scored {verdict.score} ({verdict.risk_level}), weight {weight:.2f}: "
            f"{rationale or 'no rationale given'}"
        ),
    )
    reasoning = (
        f"{result.reasoning} LLM second opinion: {verdict.score} ({verdict.risk_level}); "
        f"blended with weight {weight:.2f} to {final} ({level})."
    )
    return msgspec.structs.replace(
        result,
        score=final,
        risk_level=level,
        confidence=confidence,
        reasoning=reasoning,
        score_components=[*result.score_components, component],
        scoring_source="rules+llm",
    )


def mark_failed(result: ScoreResult, reason: str) -> ScoreResult:
    """Keep the rule score and say why the LLM could not help."""
    return msgspec.structs.replace(
        result,
        reasoning=f"{result.reasoning} LLM fallback failed ({reason}); rule score kept.",
        scoring_source="rules:llm_failed",
    )
