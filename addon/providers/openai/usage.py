"""Usage and error views of every OpenAI-style response (chat, completions, Responses, embeddings,
and their streams), and their conversion to the provider layer's records."""

from __future__ import annotations

import msgspec

from ..base import Usage


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class UsageView(msgspec.Struct):
    """Chat/completions names and Responses API names in one view."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _OutputDetails | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _PromptDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class ErrorView(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None


def error_label(err: ErrorView | str | None) -> str | None:
    """Type/code of a provider error, never its message (it may echo user data or keys)."""
    if err is None:
        return None
    if isinstance(err, str):
        return "error"
    return str(err.code or err.type or "error")


def convert_usage(u: UsageView | None) -> Usage:
    """Normalised usage from either naming scheme (all of OpenAI's counts are already inclusive)."""
    if u is None:
        return Usage()
    prompt = u.prompt_tokens if u.prompt_tokens is not None else u.input_tokens
    completion = u.completion_tokens if u.completion_tokens is not None else u.output_tokens
    pd = u.prompt_tokens_details or u.input_tokens_details
    od = u.completion_tokens_details or u.output_tokens_details
    cached = pd.cached_tokens if pd is not None else None
    if cached is None:
        cached = u.prompt_cache_hit_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.total_tokens,
        cached_tokens=cached,
        reasoning_tokens=od.reasoning_tokens if od is not None else None,
        source="reported" if prompt is not None or completion is not None else "missing",
    )
