"""Completions (``prompt``) and embeddings (``input``) requests, and embeddings responses
(completions answer with chat's ``choices``: ``chat.py``)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..base import RequestInfo, ResponseInfo, Segments, estimate_tokens, finalize_usage
from ..tokens import completion_token_bound, prompt_token_bound
from .endpoints import EMBEDDINGS
from .usage import ErrorView, UsageView, convert_usage, error_label


class _LegacyRequest(msgspec.Struct):
    """Completions (``prompt``) and embeddings (``input``): strings, lists of them, or tokens."""

    model: str | None = None
    prompt: Any = None
    input: Any = None
    suffix: str | None = None
    stream: bool | None = None
    max_tokens: int | None = None
    n: int | None = None
    best_of: int | None = None


#: Content part types that are text; any other part (image, audio, file) is media.


_legacy_request = msgspec.json.Decoder(_LegacyRequest)


def _any_text_segments(seg: Segments, path: str, value: Any) -> None:
    """Strings or lists of strings; token-id arrays carry no text we could scan."""
    if isinstance(value, str):
        seg.add(path, value)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                seg.add(f"{path}[{i}]", item)


def parse_request(provider: str, endpoint: str, body: bytes) -> RequestInfo:
    req = _legacy_request.decode(body)
    seg = Segments()
    if endpoint == EMBEDDINGS:
        _any_text_segments(seg, "$.input", req.input)
    else:
        _any_text_segments(seg, "$.prompt", req.prompt)
        seg.add("$.suffix", req.suffix)
    return RequestInfo(
        provider=provider,
        endpoint=endpoint,
        model=req.model,
        stream=bool(req.stream) and endpoint != EMBEDDINGS,
        text=seg.items,
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=req.max_tokens,
        prompt_token_bound=prompt_token_bound(len(body)),
        completion_token_bound=0
        if endpoint == EMBEDDINGS
        else completion_token_bound(req.max_tokens, max(req.n or 1, req.best_of or 1)),
    )


class _EmbeddingsResponse(msgspec.Struct):
    """``data`` (the vectors) is deliberately not declared: msgspec skips it without building it."""

    model: str | None = None
    usage: UsageView | None = None
    error: ErrorView | str | None = None


_embeddings_response = msgspec.json.Decoder(_EmbeddingsResponse)


def parse_embeddings_response(body: bytes) -> ResponseInfo:
    """A buffered embeddings response; raises msgspec's errors (the caller's to catch)."""
    emb = _embeddings_response.decode(body)
    usage = convert_usage(emb.usage)
    if usage.prompt_tokens is not None and usage.completion_tokens is None:
        usage.completion_tokens = 0  # embeddings produce no tokens
    return ResponseInfo(
        model=emb.model, usage=finalize_usage(usage, 0), error=error_label(emb.error)
    )
