"""Anthropic Messages API (``POST /v1/messages``), buffered and streamed.

Anthropic reports ``input_tokens`` without the cache reads/writes; we add them so that
``prompt_tokens`` is the whole input (see ``base``).
"""

from __future__ import annotations

import msgspec

from .base import (
    RequestInfo,
    ResponseInfo,
    Segments,
    StreamParser,
    ToolCall,
    Usage,
    estimate_tokens,
    finalize_usage,
    raw_text,
    replay_stream,
    request_error,
    response_error,
)
from .openai import is_event_stream
from .sse import SSESplitter
from .streaming import BufferedStreamParser, FramedStreamParser, StreamHandler
from .tokens import completion_token_bound, prompt_token_bound

MESSAGES = "messages"
HOSTS = frozenset({"api.anthropic.com"})


class _TextPart(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _Block(msgspec.Struct):
    type: str = ""
    text: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw()  # tool_use input, kept as the JSON text sent
    content: str | list[_TextPart] | None = None  # tool_result


class _Message(msgspec.Struct):
    role: str | None = None
    content: str | list[_Block] = ""


class _Tool(msgspec.Struct):
    name: str = ""


class _Request(msgspec.Struct):
    model: str | None = None
    system: str | list[_TextPart] | None = None
    messages: list[_Message] = []
    stream: bool | None = None
    max_tokens: int | None = None
    tools: list[_Tool] | None = None


#: Content blocks priced as media (by pixels or pages), not by their bytes.
_MEDIA_BLOCKS = frozenset({"image", "document"})

_request = msgspec.json.Decoder(_Request)


def parse_request_body(body: bytes) -> RequestInfo:
    """Parse a Messages request (raises msgspec errors)."""
    req = _request.decode(body)
    seg = Segments()
    media = 0
    if isinstance(req.system, str):
        seg.add("$.system", req.system)
    elif req.system:
        for i, part in enumerate(req.system):
            seg.add(f"$.system[{i}].text", part.text)
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, str):
            seg.add(f"$.messages[{i}].content", msg.content)
            continue
        for j, block in enumerate(msg.content):
            base = f"$.messages[{i}].content[{j}]"
            media += block.type in _MEDIA_BLOCKS
            if isinstance(block.content, list):
                media += sum(part.type in _MEDIA_BLOCKS for part in block.content)
            if block.text is not None:
                seg.add(f"{base}.text", block.text)
            elif block.input:
                seg.add(f"{base}.input", raw_text(block.input))
            elif isinstance(block.content, str):
                seg.add(f"{base}.content", block.content)
            elif block.content:
                for k, part in enumerate(block.content):
                    seg.add(f"{base}.content[{k}].text", part.text)
    return RequestInfo(
        provider="anthropic",
        endpoint=MESSAGES,
        model=req.model,
        stream=bool(req.stream),
        text=seg.items,
        roles=[m.role or "" for m in req.messages],
        tools=[t.name for t in req.tools or () if t.name],
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=req.max_tokens,
        prompt_token_bound=prompt_token_bound(len(body), tools=bool(req.tools), media_parts=media),
        completion_token_bound=completion_token_bound(req.max_tokens),
    )


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


def merge_usage(into: Usage, u: _Usage | None) -> None:
    """Fold an Anthropic usage object into ``into`` (later reports override earlier ones)."""
    if u is None:
        return
    if u.cache_read_input_tokens is not None:
        into.cached_tokens = u.cache_read_input_tokens
    if u.cache_creation_input_tokens is not None:
        into.cache_write_tokens = u.cache_creation_input_tokens
    if u.input_tokens is not None:
        into.prompt_tokens = (
            u.input_tokens + (into.cached_tokens or 0) + (into.cache_write_tokens or 0)
        )
    if u.output_tokens is not None:
        into.completion_tokens = u.output_tokens
    if into.prompt_tokens is not None and into.completion_tokens is not None:
        into.total_tokens = into.prompt_tokens + into.completion_tokens
    into.source = "reported"


class _Error(msgspec.Struct):
    type: str | None = None


class _Response(msgspec.Struct):
    model: str | None = None
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_response = msgspec.json.Decoder(_Response)


def parse_response_body(body: bytes) -> ResponseInfo:
    """Parse a buffered Messages response (never raises)."""
    try:
        resp = _response.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return response_error(exc)
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in resp.content:
        if block.type == "text" and block.text:
            texts.append(block.text)
        elif block.type == "tool_use":
            calls.append(ToolCall(name=block.name or "", arguments=raw_text(block.input)))
    usage = Usage()
    merge_usage(usage, resp.usage)
    text = "".join(texts)
    return ResponseInfo(
        model=resp.model,
        usage=finalize_usage(usage, len(text) + sum(len(c.arguments) for c in calls)),
        text=text,
        tool_calls=calls,
        finish_reason=resp.stop_reason,
        error=resp.error.type if resp.error is not None else None,
    )


class _StartBlock(msgspec.Struct):
    type: str = ""
    id: str | None = None
    name: str | None = None
    text: str | None = None


class _StreamMessage(msgspec.Struct):
    model: str | None = None
    usage: _Usage | None = None


class _StreamDelta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _StreamEvent(msgspec.Struct):
    type: str = ""
    index: int = 0
    message: _StreamMessage | None = None
    content_block: _StartBlock | None = None
    delta: _StreamDelta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_stream_event = msgspec.json.Decoder(_StreamEvent)


class MessagesStreamHandler(StreamHandler):
    """message_start / content_block_* / message_delta / message_stop."""

    def on_event(self, name: str, data: bytes) -> None:
        """Handle one SSE event."""
        ev = _stream_event.decode(data)
        kind = ev.type or name
        if kind == "content_block_delta":
            d = ev.delta
            if d is None:
                return
            if d.type == "text_delta" and d.text:
                self.text.add(d.text)
            elif d.type == "input_json_delta" and d.partial_json:
                self.tools.add_arguments(ev.index, d.partial_json)
        elif kind == "content_block_start":
            block = ev.content_block
            if block is not None and block.type in ("tool_use", "server_tool_use"):
                self.tools.start(ev.index, block.name, block.id)
            elif block is not None and block.text:
                self.text.add(block.text)
        elif kind == "message_start":
            if ev.message is not None:
                self.model = ev.message.model
                if ev.message.usage is not None:
                    # message_start's output_tokens is a placeholder (1): the real count comes
                    # in message_delta, and a stream cut before it must not look "reported".
                    ev.message.usage.output_tokens = None
                merge_usage(self.usage, ev.message.usage)
        elif kind == "message_delta":
            if ev.delta is not None and ev.delta.stop_reason:
                self.finish_reason = ev.delta.stop_reason
            merge_usage(self.usage, ev.usage)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = ev.error.type if ev.error is not None and ev.error.type else "error"
            self.done = True


class Anthropic:
    """api.anthropic.com."""

    name = "anthropic"

    def match(self, host: str, path: str) -> str | None:
        """``/v1/messages`` (not ``/v1/messages/count_tokens`` or batches)."""
        if host not in HOSTS:
            return None
        return self.match_path(path)

    def match_path(self, path: str) -> str | None:
        """Endpoint by path alone (traffic routed to this provider some other way)."""
        return MESSAGES if path.split("?", 1)[0].rstrip("/") == "/v1/messages" else None

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        """Model, stream flag, text segments and tools (never raises)."""
        try:
            return parse_request_body(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return request_error(self.name, endpoint, exc)

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        """Parse a buffered response (an SSE body is replayed through the stream parser)."""
        if is_event_stream(content_type):
            return replay_stream(self, endpoint, body, content_type)
        return parse_response_body(body)

    def stream_parser(
        self, endpoint: str, content_type: str, content_encoding: str | None
    ) -> StreamParser:
        """SSE parser; a non-SSE body (JSON error) is buffered and parsed whole."""
        if not is_event_stream(content_type):
            return BufferedStreamParser(parse_response_body, content_encoding)
        return FramedStreamParser(MessagesStreamHandler(), SSESplitter(), content_encoding)

    def inject_stream_usage(self, endpoint: str, body: bytes) -> bytes | None:
        """Anthropic streams always carry usage."""
        return None
