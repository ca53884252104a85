"""LLM fallback against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from api.scoring import Engine, HistoryFacts, LLMConfig, ScoreResult, convert_action_event
from api.scoring.llm_fallback import LLMVerdict, merge_verdict

STOP = threading.Event()


def completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }
    ).encode()


VERDICT = json.dumps(
    {"score": 90, "risk_level": "critical", "rationale": "looks like exfiltration"}
)
RESPONSES: dict[str, tuple[int, bytes]] = {
    "ok": (200, completion(VERDICT)),
    "fenced": (200, completion(f"```json\n{VERDICT}\n```")),
    "error": (500, b'{"error": "boom"}'),
    "garbage": (200, b"<html>not json</html>"),
    "prose": (200, completion("I think this is quite risky, maybe 7/10.")),
    "out_of_range": (200, completion('{"score": 900, "risk_level": "critical"}')),
    "empty": (200, json.dumps({"choices": []}).encode()),
}


class FakeLLM(BaseHTTPRequestHandler):
    """Answers POST /<mode>/chat/completions according to the mode."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        mode, _, rest = self.path.strip("/").partition("/")
        FakeLLM.requests.append(
            {"mode": mode, "path": rest, "auth": self.headers.get("Authorization"), "body": body}
        )
        if mode == "slow":
            STOP.wait(5)  # longer than the client's timeout; released at teardown
            status, payload = RESPONSES["ok"]
        else:
            status, payload = RESPONSES[mode]
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout case)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def llm_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-llm", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        STOP.set()
        # shutdown() waits for serve_forever to acknowledge; never let teardown hang on it
        threading.Thread(target=server.shutdown, name="fake-llm-stop", daemon=True).start()
        thread.join(5)
        server.server_close()


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load()


# Low confidence: no target, no history, unknown verb; outbound after a customer-data read.
THIN_EVENT = {
    "event_id": "evt-thin",
    "action": "http:webhook:payload.beam",
    "preceding_actions": ["db:customers:rows.read"],
    "data_fields_accessed": ["email", "mystery_column"],
    "parameters": {"url": "https://collector.example.net", "note": "jane@example.com"},
}
RICH_EVENT = {
    "event_id": "evt-rich",
    "action": "mcp:github:repo.read",
    "target": {"resource_type": "repository", "resource_id": "org/r", "sensitivity_level": 1},
    "mcp_context": {"server_name": "gh", "transport": "stdio", "is_verified": True},
    "data_fields_accessed": [{"field": "readme", "classification": "public"}],
}


def config(base: str, mode: str, **kw: Any) -> LLMConfig:
    return LLMConfig(
        base_url=f"{base}/{mode}", model="fake-model", api_key="sk-test", enabled=True, **kw
    )


def rules_only(engine: Engine) -> ScoreResult:
    return engine.score(convert_action_event(THIN_EVENT))


async def test_low_confidence_consults_llm_and_merges(engine: Engine, llm_server: str) -> None:
    base = rules_only(engine)
    assert base.confidence < 0.8
    FakeLLM.requests.clear()
    result = await engine.score_with_fallback(
        convert_action_event(THIN_EVENT), None, config(llm_server, "ok")
    )
    assert result.scoring_source == "rules+llm"
    llm = [c for c in result.score_components if c.source == "llm"]
    assert len(llm) == 1
    assert llm[0].value == result.score - base.score
    assert "LLM scored 90 (critical)" in llm[0].detail
    assert "LLM second opinion: 90" in result.reasoning
    # The request: OpenAI path, bearer key, compact facts and no raw values.
    (req,) = FakeLLM.requests
    assert req["path"] == "chat/completions"
    assert req["auth"] == "Bearer sk-test"
    sent = json.loads(req["body"])
    assert sent["model"] == "fake-model" and sent["response_format"] == {"type": "json_object"}
    facts = json.loads(sent["messages"][1]["content"])
    assert facts["action"] == THIN_EVENT["action"]
    assert facts["rule_score"] == base.score
    assert b"jane@example.com" not in req["body"]
    assert b"collector.example.net" not in req["body"]


async def test_merge_respects_violation_floor(engine: Engine) -> None:
    base = rules_only(engine)
    assert base.risk_level == "critical"  # exfiltration chain
    merged = merge_verdict(base, LLMVerdict(score=5, risk_level="none", rationale="benign"))
    assert merged.risk_level == "critical"
    assert merged.score >= 80


async def test_fenced_json_answer_is_accepted(engine: Engine, llm_server: str) -> None:
    result = await engine.score_with_fallback(
        convert_action_event(THIN_EVENT), None, config(llm_server, "fenced")
    )
    assert result.scoring_source == "rules+llm"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error", "HTTP 500"),
        ("garbage", "not a chat completion"),
        ("prose", "not the JSON verdict"),
        ("out_of_range", "not the JSON verdict"),
        ("empty", "no message content"),
        ("slow", "timed out after 0.3s"),
    ],
)
async def test_failures_keep_rule_score(
    engine: Engine, llm_server: str, mode: str, reason: str
) -> None:
    base = rules_only(engine)
    result = await engine.score_with_fallback(
        # a short timeout only where the timeout is the point: a loaded CI box must not turn
        # every other failure into a timeout
        convert_action_event(THIN_EVENT),
        None,
        config(llm_server, mode, timeout=0.3 if mode == "slow" else 10.0),
    )
    assert result.scoring_source == "rules:llm_failed"
    assert result.score == base.score and result.risk_level == base.risk_level
    assert [c.source for c in result.score_components] == [c.source for c in base.score_components]
    assert reason in result.reasoning
    assert "sk-test" not in result.reasoning


async def test_unreachable_endpoint(engine: Engine) -> None:
    cfg = LLMConfig(base_url="http://127.0.0.1:9", model="m", enabled=True, timeout=1.0)
    result = await engine.score_with_fallback(convert_action_event(THIN_EVENT), None, cfg)
    assert result.scoring_source == "rules:llm_failed"
    assert "LLM request failed: ConnectError" in result.reasoning


async def test_not_consulted_when_confident_disabled_or_absent(
    engine: Engine, llm_server: str
) -> None:
    FakeLLM.requests.clear()
    rich = convert_action_event(RICH_EVENT)
    history = HistoryFacts(first_use_of_server=False, rate_vs_baseline=1.0)
    confident = await engine.score_with_fallback(rich, history, config(llm_server, "ok"))
    assert confident.confidence >= 0.8 and confident.scoring_source == "rules"
    thin = convert_action_event(THIN_EVENT)
    disabled = LLMConfig(base_url=f"{llm_server}/ok", model="m")  # enabled defaults to False
    assert (await engine.score_with_fallback(thin, None, disabled)).scoring_source == "rules"
    assert (await engine.score_with_fallback(thin, None, None)).scoring_source == "rules"
    assert FakeLLM.requests == []


async def test_source_names_who_decided(engine: Engine, llm_server: str) -> None:
    thin = convert_action_event(THIN_EVENT)
    ok = await engine.score_with_fallback(thin, None, config(llm_server, "ok"))
    assert ok.scoring_source == "rules+llm"
    failed = await engine.score_with_fallback(thin, None, config(llm_server, "error"))
    assert failed.scoring_source == "rules:llm_failed"


def test_config_repr_hides_key() -> None:
    assert "sk-secret" not in repr(
        LLMConfig(base_url="http://x", model="m", api_key="sk-secret", enabled=True)
    )
