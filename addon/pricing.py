"""Cost of one LLM call in USD, from the ``genai-prices`` tables.

``cost_usd(provider, model, usage)`` prices input, cache-read, cache-write and output tokens.
Token conventions (see ``addon.providers.base``): ``prompt_tokens`` includes cache reads and
writes, ``completion_tokens`` includes reasoning tokens. genai-prices wants exactly that
(``input_tokens`` is the parent of the cache units, ``output_tokens`` the parent of reasoning), so
reasoning is never priced twice: it is only split out for the rare models that price it apart.

Unknown providers or models cost ``None`` (never a guess) and are counted in
``UNKNOWN_MODEL_COUNT``. Local inference (Ollama) costs 0.

Hot path: the (provider, model) -> price lookup is memoised, and the common price shapes are
evaluated with float arithmetic instead of genai-prices' generic (~65 µs) calculation; models
with prices that depend on the time of day are re-resolved every ``_CONDITIONAL_TTL_S``.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

from addon.providers.base import Usage

#: Our provider names -> genai-prices provider ids. Providers not listed are never priced.
PROVIDER_IDS: dict[str, str] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex": "google",
    "bedrock": "aws",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "xai": "x-ai",
    "together": "together",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
}
#: Local inference: no API bill.
FREE_PROVIDERS = frozenset({"ollama"})

#: Calls priced as None, by (provider, model); bounded (overflow goes to (provider, "<other>")).
UNKNOWN_MODEL_COUNT: Counter[tuple[str, str]] = Counter()
_MAX_UNKNOWN_KEYS = 1000
_MAX_MEMO = 4096
_CONDITIONAL_TTL_S = 60.0
# Price keys that the float path cannot honour: a per-request fee, or reasoning priced apart.
_SLOW_KEYS = frozenset({"requests_kcount", "output_reasoning_mtok"})


class _Rate:
    """One price in USD per token, flat or with input-size tiers (cliff model, like genai)."""

    __slots__ = ("base", "tiers")

    def __init__(self, price: Decimal | TieredPrices, per: int = 1_000_000) -> None:
        if isinstance(price, TieredPrices):
            self.base = float(price.base) / per
            # Highest threshold first, as genai-prices applies them.
            self.tiers = [(t.start, float(t.price) / per) for t in reversed(price.tiers)]
        else:
            self.base = float(price) / per
            self.tiers = []

    def at(self, input_tokens: int) -> float:
        """Per-token price for a call with this many input tokens."""
        for start, price in self.tiers:
            if input_tokens > start:
                return price
        return self.base


class _Price:
    """Resolved prices of one (provider, model)."""

    __slots__ = ("cache_read", "cache_write", "expires", "input", "model", "model_price", "output")

    def __init__(self, model: ModelInfo, model_price: ModelPrice, expires: float) -> None:
        self.model = model
        self.model_price = model_price
        self.expires = expires
        self.input: _Rate | None = None
        self.output: _Rate | None = None
        self.cache_read: _Rate | None = None
        self.cache_write: _Rate | None = None
        values = {k: v for k, v in model_price.__dict__.items() if v is not None}
        if "input_mtok" in values and "output_mtok" in values and not _SLOW_KEYS & values.keys():
            self.input = _Rate(values["input_mtok"])
            self.output = _Rate(values["output_mtok"])
            if "cache_read_mtok" in values:
                self.cache_read = _Rate(values["cache_read_mtok"])
            if "cache_write_mtok" in values:
                self.cache_write = _Rate(values["cache_write_mtok"])

    def cost(
        self, prompt: int, cached: int, written: int, completion: int, reasoning: int
    ) -> float:
        """USD for these (already consistent) counts."""
        if self.input is None or self.output is None:
            return self._slow(prompt, cached, written, completion, reasoning)
        # As genai-prices: a cache unit without its own price is billed as plain input.
        plain = prompt
        total = 0.0
        if self.cache_read is not None:
            plain -= cached
            total += cached * self.cache_read.at(prompt)
        if self.cache_write is not None:
            plain -= written
            total += written * self.cache_write.at(prompt)
        total += max(plain, 0) * self.input.at(prompt)
        total += completion * self.output.at(prompt)
        return total

    def _slow(
        self, prompt: int, cached: int, written: int, completion: int, reasoning: int
    ) -> float:
        usage = genai_prices.Usage(
            input_tokens=prompt,
            cache_read_tokens=cached or None,
            cache_write_tokens=written or None,
            output_tokens=completion,
            output_reasoning_tokens=reasoning or None,
        )
        return float(self.model_price.calc_price(usage)["total_price"])


_memo: dict[tuple[str, str], _Price | None] = {}


def _normalise_model(provider: str, model: str) -> str:
    if provider == "bedrock" and model.startswith("arn:"):
        # arn:aws:bedrock:region:acct:inference-profile/us.anthropic.claude-... -> the id
        return model.rsplit("/", 1)[-1]
    return model


def _resolve(provider_id: str, provider: str, model: str) -> _Price | None:
    snapshot = data_snapshot.get_snapshot()
    try:
        found_provider, info = snapshot.find_provider_model(
            _normalise_model(provider, model), None, provider_id, None
        )
    except LookupError:
        return None
    del found_provider
    conditional = not isinstance(info.prices, ModelPrice)
    expires = time.monotonic() + _CONDITIONAL_TTL_S if conditional else float("inf")
    return _Price(info, info.get_prices(datetime.now(tz=UTC)), expires)


def _count_unknown(provider: str, model: str) -> None:
    key = (provider, model)
    if key not in UNKNOWN_MODEL_COUNT and len(UNKNOWN_MODEL_COUNT) >= _MAX_UNKNOWN_KEYS:
        key = (provider, "<other>")
    UNKNOWN_MODEL_COUNT[key] += 1


def price_for(provider: str, model: str) -> _Price | None:
    """Memoised price record, or None for an unknown provider/model."""
    key = (provider, model)
    try:
        price = _memo[key]
    except KeyError:
        pass
    else:
        if price is None or price.expires >= time.monotonic():
            return price
    provider_id = PROVIDER_IDS.get(provider)
    price = _resolve(provider_id, provider, model) if provider_id else None
    if len(_memo) >= _MAX_MEMO:
        _memo.clear()  # model names come from traffic: keep the memo bounded
    _memo[key] = price
    return price


def cost_usd(provider: str, model: str | None, usage: Usage) -> float | None:
    """USD cost of one call; None when the model is unknown or no token count is known."""
    if provider in FREE_PROVIDERS:
        return 0.0
    if not model:
        _count_unknown(provider, "")
        return None
    price = price_for(provider, model)
    if price is None:
        _count_unknown(provider, model)
        return None
    if usage.prompt_tokens is None and usage.completion_tokens is None:
        return None
    prompt = max(usage.prompt_tokens or 0, 0)
    # Keep the parts within the whole so an odd report never prices negative tokens.
    cached = min(max(usage.cached_tokens or 0, 0), prompt)
    written = min(max(usage.cache_write_tokens or 0, 0), prompt - cached)
    completion = max(usage.completion_tokens or 0, 0)
    reasoning = min(max(usage.reasoning_tokens or 0, 0), completion)
    return price.cost(prompt, cached, written, completion, reasoning)


def reset_memo() -> None:
    """Forget memoised prices (after genai-prices data is updated, and in tests)."""
    _memo.clear()
