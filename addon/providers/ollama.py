"""Ollama's native API (``/api/chat``, ``/api/generate``): NDJSON streams, streaming by default.

Usage is ``prompt_eval_count`` / ``eval_count`` on the final (``"done": true``) object. Ollama
leaves ``prompt_eval_count`` out when the whole prompt came from its cache, so a done object with
``eval_count`` but no prompt count reports a prompt of 0 rather than nothing.
"""

from __future__ import annotations

import msgspec

from .base import (
    RequestInfo,
    ResponseInfo,
    Segments,
    StreamParser,
    Usage,
    estimate_tokens,
    raw_text,
    request_error,
    response_error,
)
from .framing import NDJSONSplitter
from .streaming import FramedStreamParser, StreamHandler
from .tokens import completion_token_bound, prompt_token_bound

CHAT = "ollama.chat"
GENERATE = "ollama.generate"
DEFAULT_PORT_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "ollama"})


def endpoint_from_path(path: str) -> str | None:
    """``/api/chat`` or ``/api/generate``."""
    path = path.split("?", 1)[0].rstrip("/")
    if path == "/api/chat":
        return CHAT
    if path == "/api/generate":
        return GENERATE
    return None


class _Function(msgspec.Struct):
    name: str = ""
    arguments: msgspec.Raw = msgspec.Raw()


class _ToolCallIn(msgspec.Struct):
    function: _Function | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallIn] | None = None
    images: list[msgspec.Raw] | None = None


class _Named(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    function: _Named | None = None


class _Options(msgspec.Struct):
    num_predict: int | None = None


class _Request(msgspec.Struct):
    model: str | None = None
    messages: list[_Message] = []
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    stream: bool | None = None
    tools: list[_Tool] | None = None
    options: _Options | None = None
    images: list[msgspec.Raw] | None = None


_request = msgspec.json.Decoder(_Request)


def parse_request_body(endpoint: str, body: bytes) -> RequestInfo:
    """Parse a chat/generate request (raises msgspec errors)."""
    req = _request.decode(body)
    seg = Segments()
    seg.add("$.system", req.system)
    seg.add("$.prompt", req.prompt)
    seg.add("$.suffix", req.suffix)
    for i, msg in enumerate(req.messages):
        seg.add(f"$.messages[{i}].content", msg.content)
        for k, call in enumerate(msg.tool_calls or ()):
            if call.function is not None:
                seg.add(
                    f"$.messages[{i}].tool_calls[{k}].function.arguments",
                    raw_text(call.function.arguments),
                )
    return RequestInfo(
        provider="ollama",
        endpoint=endpoint,
        model=req.model,
        stream=req.stream is not False,  # Ollama streams unless told not to
        text=seg.items,
        tools=[t.function.name for t in req.tools or () if t.function and t.function.name],
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=req.options.num_predict if req.options else None,
        prompt_token_bound=prompt_token_bound(
            len(body),
            tools=bool(req.tools),
            media_parts=len(req.images or ()) + sum(len(m.images or ()) for m in req.messages),
        ),
        # num_predict -1 (no limit) and -2 (fill the context) set no bound.
        completion_token_bound=completion_token_bound(
            req.options.num_predict
            if req.options and req.options.num_predict is not None and req.options.num_predict >= 0
            else None
        ),
    )


class _Chunk(msgspec.Struct):
    model: str | None = None
    message: _Message | None = None
    response: str | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: str | None = None


_chunk = msgspec.json.Decoder(_Chunk)


class OllamaHandler(StreamHandler):
    """One JSON object a line; the one with ``done: true`` carries the counts."""

    def on_event(self, name: str, data: bytes) -> None:
        """Handle one NDJSON line."""
        self.absorb(_chunk.decode(data))

    def absorb(self, c: _Chunk) -> None:
        """Fold one object into the state."""
        if c.model and self.model is None:
            self.model = c.model
        if c.response:
            self.text.add(c.response)
        if c.message is not None:
            if c.message.content:
                self.text.add(c.message.content)
            for call in c.message.tool_calls or ():
                if call.function is not None:
                    key = self.tools.count  # Ollama sends each call whole
                    self.tools.start(key, call.function.name, None)
                    self.tools.set_arguments(key, raw_text(call.function.arguments))
        if c.error is not None:
            self.error = "error"
            self.done = True
        if c.done:
            self.done = True
            self.finish_reason = c.done_reason or "stop"
            if c.eval_count is not None or c.prompt_eval_count is not None:
                prompt = c.prompt_eval_count or 0
                completion = c.eval_count or 0
                self.usage = Usage(
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=prompt + completion,
                    source="reported",
                )


def parse_response_body(body: bytes) -> ResponseInfo:
    """Parse a buffered response: one object, or NDJSON lines if it was streamed (never raises)."""
    handler = OllamaHandler()
    try:
        lines = [line for line in body.split(b"\n") if line.strip()]
        for line in lines:
            handler.absorb(_chunk.decode(line))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return response_error(exc)
    if not lines:
        return ResponseInfo(parse_error="empty body")
    info = handler.result()
    if not handler.done:
        info.parse_error = "truncated response: no done object"
    return info


class Ollama:
    """Ollama on any host (recognised by its paths)."""

    name = "ollama"

    def match(self, host: str, path: str) -> str | None:
        """``/api/chat`` and ``/api/generate`` on any host."""
        return endpoint_from_path(path)

    def match_path(self, path: str) -> str | None:
        """Endpoint by path alone."""
        return endpoint_from_path(path)

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        """Model, stream flag (default true), text segments and tools (never raises)."""
        try:
            return parse_request_body(endpoint, body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return request_error(self.name, endpoint, exc)

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        """Parse a buffered response."""
        return parse_response_body(body)

    def stream_parser(
        self, endpoint: str, content_type: str, content_encoding: str | None
    ) -> StreamParser:
        """NDJSON parser (a single JSON object is one line of it)."""
        return FramedStreamParser(OllamaHandler(), NDJSONSplitter(), content_encoding)

    def inject_stream_usage(self, endpoint: str, body: bytes) -> bytes | None:
        """Ollama always reports counts."""
        return None
