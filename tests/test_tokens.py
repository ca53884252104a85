"""The budget reservation's token bound: an upper bound of real tokenizers, for any script.

``tests/data/token_counts.json`` holds sample prompts with their real cl100k and o200k counts,
made offline by ``tests/data/make_token_counts.py`` (the project does not depend on a tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon.budgets import call_cost
from addon.providers import ANTHROPIC, GEMINI, PROVIDERS
from addon.providers.base import RequestInfo
from addon.providers.tokens import (
    MEDIA_PART_TOKENS,
    TOOLS_PREAMBLE_TOKENS,
    completion_token_bound,
    prompt_token_bound,
)

SAMPLES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "token_counts.json").read_text(encoding="utf-8")
)
#: Tokens a chat template adds around one user message (OpenAI: 3 per message, 3 to prime the
#: reply, the role): counted on top of the text so the bound must cover them too.
TEMPLATE = 7
OPENAI = PROVIDERS["openai"]


def chat_body(text: str) -> bytes:
    """The smallest body a client sends for this prompt (compact JSON, UTF-8 unescaped)."""
    return json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def openai_bound(text: str) -> int:
    return OPENAI.parse_request(
        "chat.completions", "/v1/chat/completions", chat_body(text)
    ).prompt_token_bound


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
def test_bound_holds_for_real_tokenizers(sample: dict[str, Any]) -> None:
    real = max(sample["cl100k"], sample["o200k"]) + TEMPLATE
    assert openai_bound(sample["text"]) >= real


@pytest.mark.parametrize("script", ["english", "chinese", "japanese", "korean", "emoji", "code"])
def test_bound_beats_the_old_estimate_where_it_failed(script: str) -> None:
    """The old estimate (characters / 4) undercounted CJK and emoji; the bound never does."""
    for s in SAMPLES:
        if s["name"].startswith(script + "_"):
            assert openai_bound(s["text"]) >= s["o200k"] + TEMPLATE
            assert openai_bound(s["text"]) >= s["cl100k"] + TEMPLATE


def test_nothing_tighter_than_bytes_holds() -> None:
    """Why the bound is bytes and not characters: real strings reach one token per byte."""
    by_name = {s["name"]: s for s in SAMPLES}
    assert by_name["a1_1000"]["cl100k"] == 1000  # ASCII: one token per character
    rare = by_name["cjk_rare_1000"]
    assert rare["cl100k"] > 2.9 * len(rare["text"])  # CJK: up to 3 tokens (its 3 bytes) a character


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_bound_covers_every_utf8_byte(text: str) -> None:
    """Byte-level BPE yields at most one token per UTF-8 byte: the bound covers that, plus the
    template, for any text (lone surrogates included: JSON escapes them)."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    info = OPENAI.parse_request("chat.completions", "/v1/chat/completions", body)
    if info.parse_error is None:
        assert info.prompt_token_bound >= len(text.encode("utf-8", "surrogatepass")) + TEMPLATE


def test_tools_and_media_are_added() -> None:
    plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with_tool = plain | {"tools": [{"type": "function", "function": {"name": "f"}}]}
    image = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
    }
    for body, extra in ((with_tool, TOOLS_PREAMBLE_TOKENS), (image, MEDIA_PART_TOKENS)):
        raw = json.dumps(body).encode()
        info = OPENAI.parse_request("chat.completions", "/v1/chat/completions", raw)
        assert info.prompt_token_bound == len(raw) + extra


PROVIDER_CASES = [
    (
        OPENAI,
        "chat.completions",
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 50,
            "n": 3,
        },
        150,
    ),
    (
        OPENAI,
        "chat.completions",
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": 20},
        20,
    ),
    (OPENAI, "chat.completions", "/v1/chat/completions", {"model": "gpt-4o", "messages": []}, None),
    (
        OPENAI,
        "responses",
        "/v1/responses",
        {"model": "gpt-4o", "input": "x", "max_output_tokens": 64},
        64,
    ),
    (OPENAI, "embeddings", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, 0),
    (
        OPENAI,
        "completions",
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "x", "max_tokens": 10, "n": 2, "best_of": 5},
        50,
    ),
    (
        ANTHROPIC,
        "messages",
        "/v1/messages",
        {
            "model": "claude-3-5-sonnet-latest",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": "x"}],
        },
        300,
    ),
    (
        GEMINI,
        "generateContent",
        "/v1beta/models/gemini-1.5-pro:generateContent",
        {
            "contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"maxOutputTokens": 40, "candidateCount": 2},
        },
        80,
    ),
]


@pytest.mark.parametrize(("provider", "endpoint", "path", "body", "completion"), PROVIDER_CASES)
def test_every_provider_fills_the_bounds(
    provider: Any, endpoint: str, path: str, body: dict[str, Any], completion: int | None
) -> None:
    raw = json.dumps(body).encode()
    info = provider.parse_request(endpoint, path, raw)
    assert info.parse_error is None
    assert info.prompt_token_bound >= len(raw)
    assert info.completion_token_bound == completion


def test_completion_bound() -> None:
    assert completion_token_bound(None) is None
    assert completion_token_bound(100) == 100
    assert completion_token_bound(100, 4) == 400
    assert completion_token_bound(-5) == 0
    assert prompt_token_bound(-1) == 0


def test_call_cost() -> None:
    info = RequestInfo(
        provider="openai",
        endpoint="chat.completions",
        model="gpt-4o",
        prompt_token_bound=1000,
        completion_token_bound=None,
    )
    cost = call_cost(info, "openai", body_bytes=999, default_completion=1024, needs_usd=True)
    assert cost.tokens == 2024
    # gpt-4o: $2.50 / M input, $10 / M output: 2,500 + 10,240 micro-dollars, rounded up.
    assert cost.usd_micros is not None and 12_700 <= cost.usd_micros <= 12_800
    # A parse that failed is bounded by the body's size and the default allowance.
    broken = RequestInfo(provider="openai", endpoint="chat.completions", parse_error="bad")
    assert (
        call_cost(broken, "openai", body_bytes=500, default_completion=10, needs_usd=False).tokens
        == 510
    )
    # An unknown model has no price: the budget decides (Budgets(unpriced=...)).
    odd = RequestInfo(
        provider="openai", endpoint="chat.completions", model="no-such-model", prompt_token_bound=5
    )
    assert (
        call_cost(odd, "openai", body_bytes=5, default_completion=1, needs_usd=True).usd_micros
        is None
    )
    assert (
        call_cost(None, "mcp", body_bytes=5000, default_completion=1024, needs_usd=True).tokens == 0
    )
