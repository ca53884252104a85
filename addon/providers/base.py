"""Shared records and helpers of the provider layer.

Everything here is pure: no mitmproxy, no I/O. Token counts are normalised across providers so the
rest of the proxy (budgets, pricing, events) never needs to know who reported them:

- ``prompt_tokens`` counts *all* input tokens, cache reads and cache writes included (OpenAI and
  Gemini already report it that way; Anthropic and Bedrock report them apart, so we add them up).
- ``completion_tokens`` counts *all* output tokens, reasoning included (OpenAI's convention; Gemini
  reports thoughts apart, so we add them). ``reasoning_tokens`` is therefore a subset, never extra.
- ``cached_tokens`` / ``cache_write_tokens`` are subsets of ``prompt_tokens``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import msgspec

TextDeltaCallback = Callable[[str], None]

#: Accumulated assistant text kept for the PII scan, in characters. Beyond it the text is cut and
#: ``ResponseInfo.text_truncated`` is set; usage counting goes on.
MAX_TEXT_CHARS = 1_000_000
#: Accumulated arguments of one streamed tool call, in characters.
MAX_TOOL_ARGUMENT_CHARS = 1_000_000
#: Tool calls kept per response; more are counted in usage but not returned.
MAX_TOOL_CALLS = 128
#: Largest undelimited frame/line a stream framer buffers before giving up on the stream.
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Largest non-SSE body a stream parser buffers to parse it whole at the end.
MAX_BUFFERED_BODY_BYTES = 32 * 1024 * 1024

SOURCE_REPORTED = "reported"
SOURCE_ESTIMATED = "estimated"
SOURCE_MISSING = "missing"


class Usage(msgspec.Struct):
    """Token usage of one call, normalised as described in the module docstring."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # cache reads
    cache_write_tokens: int | None = None  # anthropic cache_creation_input_tokens
    reasoning_tokens: int | None = None
    source: str = SOURCE_MISSING  # "reported" | "estimated" | "missing"


class ToolCall(msgspec.Struct):
    """One tool call made by the model; ``arguments`` is the JSON text as sent."""

    name: str
    arguments: str
    id: str | None = None


class RequestInfo(msgspec.Struct):
    """What the proxy needs to know about a request before forwarding it."""

    provider: str
    endpoint: str
    model: str | None = None
    stream: bool = False
    text: list[tuple[str, str]] = []
    tools: list[str] = []
    estimated_prompt_tokens: int = 0
    max_tokens: int | None = None
    parse_error: str | None = None
    #: Upper bound of the prompt tokens, for budget reservations (``tokens.prompt_token_bound``);
    #: 0 when the parse did not compute one. ``estimated_prompt_tokens`` stays the event's estimate.
    prompt_token_bound: int = 0
    #: Upper bound of the completion tokens (``max_tokens`` times the choices asked for); None when
    #: the request sets no limit, 0 for an endpoint without output (embeddings).
    completion_token_bound: int | None = None
    #: The role of each message (``$.messages[i]`` / ``$.input[i]``: user, system, tool …) where
    #: the dialect has roles, for the provenance of the tool calls it produces (``addon/trust.py``).
    roles: list[str] = []


class ResponseInfo(msgspec.Struct):
    """What the proxy records about a response (buffered or streamed)."""

    model: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    text: str = ""
    tool_calls: list[ToolCall] = []
    finish_reason: str | None = None
    parse_error: str | None = None
    #: Error the provider reported in the body (its type/code only, never its message text).
    error: str | None = None
    #: ``text`` (or a tool call's arguments) was cut at the memory cap.
    text_truncated: bool = False


class StreamParser(Protocol):
    """Incremental parser of a streamed response body."""

    text_delta_callback: TextDeltaCallback | None

    def feed(self, chunk: bytes) -> None:
        """Consume raw (still content-encoded) body bytes; never raises."""

    def finish(self) -> ResponseInfo:
        """Return what was seen; a truncated stream sets ``parse_error``."""


class Provider(Protocol):
    """One LLM API dialect."""

    name: str

    def match(self, host: str, path: str) -> str | None:
        """Endpoint name for this host and path (no query string), or None."""

    def match_path(self, path: str) -> str | None:
        """Endpoint name from the path alone (for traffic routed to a known provider)."""

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        """Parse a request body; never raises."""

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        """Parse a decoded, buffered response body; never raises."""

    def stream_parser(
        self, endpoint: str, content_type: str, content_encoding: str | None
    ) -> StreamParser:
        """A new incremental parser for a streamed response."""

    def inject_stream_usage(self, endpoint: str, body: bytes) -> bytes | None:
        """Body with ``stream_options.include_usage`` set, or None when nothing to change."""


def replay_stream(
    provider: Provider, endpoint: str, body: bytes, content_type: str
) -> ResponseInfo:
    """Parse a stream that arrived buffered (decoded) by feeding it through the stream parser."""
    parser = provider.stream_parser(endpoint, content_type, None)
    parser.feed(body)
    return parser.finish()


def estimate_tokens(chars: int) -> int:
    """Cheap token estimate from a character count (about four characters a token)."""
    return (chars + 3) // 4


def error_text(exc: Exception) -> str:
    """Short description of a decode failure; msgspec messages name the JSON path, not values."""
    return f"{type(exc).__name__}: {exc}"[:300]


def finalize_usage(usage: Usage, output_chars: int) -> Usage:
    """Fill what the provider did not report: totals, or a completion estimate from the text.

    ``source`` becomes "reported" when every present count came from the provider, "estimated"
    when the completion count had to be estimated, "missing" when nothing is known.
    """
    if usage.completion_tokens is None and output_chars > 0:
        usage.completion_tokens = estimate_tokens(output_chars)
        usage.source = SOURCE_ESTIMATED
    elif (
        usage.prompt_tokens is not None or usage.completion_tokens is not None
    ) and usage.source == SOURCE_MISSING:
        usage.source = SOURCE_REPORTED
    if (
        usage.total_tokens is None
        and usage.prompt_tokens is not None
        and usage.completion_tokens is not None
    ):
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return usage


def fill_prompt_estimate(usage: Usage, estimated_prompt_tokens: int) -> Usage:
    """Use the request's prompt estimate when the response reported no prompt count.

    For the addon: the response parsers do not see the request, so they cannot do this alone.
    """
    if usage.prompt_tokens is None and estimated_prompt_tokens > 0:
        usage.prompt_tokens = estimated_prompt_tokens
        usage.source = SOURCE_ESTIMATED
        if usage.completion_tokens is not None:
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return usage


class TextCollector:
    """Assistant text of one response, capped at ``MAX_TEXT_CHARS``, with its delta callback."""

    __slots__ = ("_chars", "_parts", "callback", "truncated")

    def __init__(self, callback: TextDeltaCallback | None = None) -> None:
        self._parts: list[str] = []
        self._chars = 0
        self.truncated = False
        self.callback = callback

    def add(self, text: str) -> None:
        """Append one delta (also handed to the callback, uncapped, so streaming scans see all)."""
        if not text:
            return
        if self.callback is not None:
            # A failing observer must not break parsing.
            with contextlib.suppress(Exception):
                self.callback(text)
        room = MAX_TEXT_CHARS - self._chars
        if room <= 0:
            self.truncated = True
            return
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self._parts.append(text)
        self._chars += len(text)

    @property
    def chars(self) -> int:
        """Characters kept so far."""
        return self._chars

    def text(self) -> str:
        """All kept text."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""


class _PendingCall:
    """A tool call being assembled from stream deltas."""

    __slots__ = ("call_id", "chars", "name", "parts")

    def __init__(self, name: str | None, call_id: str | None) -> None:
        self.name = name or ""
        self.call_id = call_id
        self.parts: list[str] = []
        self.chars = 0


class ToolCallCollector:
    """Streamed tool calls, keyed by the provider's index, arguments concatenated and capped."""

    __slots__ = ("_calls", "truncated")

    def __init__(self) -> None:
        self._calls: dict[object, _PendingCall] = {}
        self.truncated = False

    def _get(self, key: object) -> _PendingCall | None:
        call = self._calls.get(key)
        if call is None:
            if len(self._calls) >= MAX_TOOL_CALLS:
                self.truncated = True
                return None
            call = self._calls[key] = _PendingCall(None, None)
        return call

    def start(self, key: object, name: str | None, call_id: str | None) -> None:
        """Open (or update) the call at ``key``."""
        call = self._get(key)
        if call is None:
            return
        if name:
            call.name = name
        if call_id:
            call.call_id = call_id

    def add_arguments(self, key: object, fragment: str) -> None:
        """Append an arguments fragment to the call at ``key`` (opened if unseen)."""
        call = self._get(key)
        if call is None or not fragment:
            return
        if call.chars + len(fragment) > MAX_TOOL_ARGUMENT_CHARS:
            self.truncated = True
            fragment = fragment[: max(0, MAX_TOOL_ARGUMENT_CHARS - call.chars)]
        call.parts.append(fragment)
        call.chars += len(fragment)

    def set_arguments(self, key: object, arguments: str) -> None:
        """Replace the arguments of the call at ``key`` with the complete text."""
        call = self._get(key)
        if call is None:
            return
        if len(arguments) > MAX_TOOL_ARGUMENT_CHARS:
            self.truncated = True
            arguments = arguments[:MAX_TOOL_ARGUMENT_CHARS]
        call.parts = [arguments]
        call.chars = len(arguments)

    @property
    def count(self) -> int:
        """Calls opened so far."""
        return len(self._calls)

    def chars(self) -> int:
        """Characters of arguments held (for output-token estimates)."""
        return sum(call.chars for call in self._calls.values())

    def calls(self) -> list[ToolCall]:
        """Calls in the order they were opened."""
        return [
            ToolCall(name=c.name, arguments="".join(c.parts), id=c.call_id)
            for c in self._calls.values()
        ]


class Segments:
    """Request text segments ``(json_path, text)`` for the PII scan, with their character count."""

    __slots__ = ("chars", "items")

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.chars = 0

    def add(self, path: str, text: str | None) -> None:
        """Record a non-empty segment."""
        if text:
            self.items.append((path, text))
            self.chars += len(text)


def request_error(provider: str, endpoint: str, exc: Exception) -> RequestInfo:
    """RequestInfo for a body that could not be decoded."""
    return RequestInfo(provider=provider, endpoint=endpoint, parse_error=error_text(exc))


def response_error(exc: Exception) -> ResponseInfo:
    """ResponseInfo for a body that could not be decoded."""
    return ResponseInfo(parse_error=error_text(exc))


def raw_text(raw: msgspec.Raw) -> str:
    """JSON text of a raw value (tool arguments sent as objects), "" when absent."""
    return bytes(raw).decode("utf-8", "replace") if raw else ""
