"""Pricing: genai-prices lookups, cache-token pricing, unknown models, the float fast path."""

from __future__ import annotations

import genai_prices
import pytest

from addon import pricing
from addon.providers.base import Usage

KNOWN = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "o1"),
    ("azure", "gpt-4o"),
    ("anthropic", "claude-3-5-sonnet-20241022"),
    ("anthropic", "claude-3-5-sonnet-latest"),
    ("gemini", "gemini-1.5-pro"),
    ("gemini", "gemini-1.5-pro-002"),
    ("vertex", "gemini-1.5-flash"),
    ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"),
    ("mistral", "mistral-large-latest"),
    ("groq", "llama-3.3-70b-versatile"),
    ("deepseek", "deepseek-chat"),
    ("openrouter", "openai/gpt-4o"),
    ("xai", "grok-2"),
]


@pytest.fixture(autouse=True)
def _fresh() -> None:
    pricing.reset_memo()
    pricing.UNKNOWN_MODEL_COUNT.clear()


@pytest.mark.parametrize(("provider", "model"), KNOWN)
def test_known_models_cost_something(provider: str, model: str) -> None:
    cost = pricing.cost_usd(provider, model, Usage(prompt_tokens=1000, completion_tokens=200))
    assert cost is not None and cost > 0
    assert not pricing.UNKNOWN_MODEL_COUNT


def test_gpt4o_exact_price() -> None:
    # $2.50 / MTok in, $10 / MTok out, $1.25 / MTok cached (genai-prices data).
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=100_000, cached_tokens=400_000)
    assert pricing.cost_usd("openai", "gpt-4o", usage) == pytest.approx(
        0.6 * 2.5 + 0.4 * 1.25 + 1.0
    )


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o"),
        ("anthropic", "claude-3-5-sonnet-20241022"),
        ("deepseek", "deepseek-chat"),
        ("bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"),
    ],
)
def test_cache_reads_lower_cost(provider: str, model: str) -> None:
    plain = pricing.cost_usd(provider, model, Usage(prompt_tokens=10_000, completion_tokens=100))
    cached = pricing.cost_usd(
        provider, model, Usage(prompt_tokens=10_000, completion_tokens=100, cached_tokens=8_000)
    )
    assert plain is not None and cached is not None
    assert cached < plain


def test_cache_writes_are_priced_above_plain_input() -> None:
    plain = pricing.cost_usd("anthropic", "claude-3-5-sonnet-20241022", Usage(10_000, 0))
    written = pricing.cost_usd(
        "anthropic", "claude-3-5-sonnet-20241022", Usage(10_000, 0, cache_write_tokens=8_000)
    )
    assert plain is not None and written is not None
    assert written == pytest.approx(plain + 8_000 * (3.75 - 3.0) / 1e6)


def test_reasoning_is_not_double_counted() -> None:
    base = pricing.cost_usd("openai", "o1", Usage(prompt_tokens=100, completion_tokens=1000))
    with_reasoning = pricing.cost_usd(
        "openai", "o1", Usage(prompt_tokens=100, completion_tokens=1000, reasoning_tokens=800)
    )
    assert base == with_reasoning


@pytest.mark.parametrize(
    ("provider", "model", "usage"),
    [
        ("openai", "gpt-4o", Usage(1234, 56, cached_tokens=1024)),
        ("openai", "o1", Usage(5000, 3000, cached_tokens=1000, reasoning_tokens=2000)),
        (
            "anthropic",
            "claude-3-5-sonnet-20241022",
            Usage(3050, 120, cached_tokens=2000, cache_write_tokens=1000),
        ),
        ("anthropic", "claude-3-haiku-20240307", Usage(100, 10, cache_write_tokens=50)),
        # Tiered (price changes above 128k input tokens)
        ("gemini", "gemini-1.5-pro", Usage(100_000, 1000)),
        ("gemini", "gemini-1.5-pro", Usage(200_000, 1000, cached_tokens=50_000)),
        (
            "gemini",
            "gemini-2.5-pro",
            Usage(300_000, 5000, cached_tokens=100_000, reasoning_tokens=4000),
        ),
        (
            "bedrock",
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            Usage(1530, 25, cached_tokens=1000, cache_write_tokens=500),
        ),
        ("deepseek", "deepseek-chat", Usage(10_000, 500, cached_tokens=9000)),
        ("deepseek", "deepseek-reasoner", Usage(10_000, 5000, reasoning_tokens=4000)),
        # A per-request fee: evaluated by genai-prices itself (the slow path).
        ("perplexity", "sonar", Usage(1000, 200)),
        ("mistral", "mistral-large-latest", Usage(2000, 300)),
    ],
)
def test_matches_genai_prices(provider: str, model: str, usage: Usage) -> None:
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.completion_tokens,
        ),
        model,
        provider_id=pricing.PROVIDER_IDS[provider],
    ).total_price
    got = pricing.cost_usd(provider, model, usage)
    assert got == pytest.approx(float(expected), rel=1e-9)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-imaginary-9"),
        ("anthropic", "claude-nope"),
        ("openai-compatible", "llama-3-8b"),
        ("vllm", "meta-llama/Llama-3-70b"),
        ("bedrock", "unknown.model-v1:0"),
    ],
)
def test_unknown_model_is_none_and_counted(provider: str, model: str) -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    assert pricing.cost_usd(provider, model, usage) is None
    assert pricing.cost_usd(provider, model, usage) is None
    assert pricing.UNKNOWN_MODEL_COUNT[(provider, model)] == 2


def test_missing_model_is_none_and_counted() -> None:
    assert pricing.cost_usd("openai", None, Usage(1, 1)) is None
    assert pricing.UNKNOWN_MODEL_COUNT[("openai", "")] == 1


def test_unknown_counter_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pricing, "_MAX_UNKNOWN_KEYS", 3)
    for i in range(10):
        pricing.cost_usd("openai-compatible", f"m{i}", Usage(1, 1))
    assert len(pricing.UNKNOWN_MODEL_COUNT) == 4
    assert pricing.UNKNOWN_MODEL_COUNT[("openai-compatible", "<other>")] == 7


def test_no_usage_means_no_cost() -> None:
    assert pricing.cost_usd("openai", "gpt-4o", Usage()) is None
    assert not pricing.UNKNOWN_MODEL_COUNT


def test_local_models_are_free() -> None:
    assert pricing.cost_usd("ollama", "llama3.2", Usage(100, 100)) == 0.0


def test_bedrock_inference_profile_arn() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"
    direct = pricing.cost_usd(
        "bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", Usage(100, 100)
    )
    assert direct is not None
    assert pricing.cost_usd("bedrock", arn, Usage(100, 100)) == direct


def test_inconsistent_counts_never_go_negative() -> None:
    cost = pricing.cost_usd(
        "openai", "gpt-4o", Usage(prompt_tokens=10, completion_tokens=0, cached_tokens=50)
    )
    assert cost == pytest.approx(10 * 1.25 / 1e6)


def test_lookup_is_memoised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = pricing._resolve

    def counting(provider_id: str, provider: str, model: str) -> object:
        calls.append((provider, model))
        return real(provider_id, provider, model)

    monkeypatch.setattr(pricing, "_resolve", counting)
    for _ in range(5):
        pricing.cost_usd("openai", "gpt-4o", Usage(10, 10))
        pricing.cost_usd("openai", "gpt-imaginary-9", Usage(10, 10))
    assert calls == [("openai", "gpt-4o"), ("openai", "gpt-imaginary-9")]
