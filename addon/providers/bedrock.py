"""AWS Bedrock Runtime Converse API (``/model/{modelId}/converse`` and ``/converse-stream``).

``converse-stream`` answers in the AWS event stream framing (``eventstream.py``). Bedrock reports
``inputTokens`` without the cache reads/writes (like Anthropic); we add them so ``prompt_tokens``
is the whole input (see ``base``).
"""

from __future__ import annotations

from urllib.parse import unquote

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
from .eventstream import EventStreamSplitter
from .streaming import BufferedStreamParser, FramedStreamParser, StreamHandler
from .tokens import completion_token_bound, prompt_token_bound

CONVERSE = "converse"
CONVERSE_STREAM = "converse-stream"
EVENTSTREAM_TYPE = "application/vnd.amazon.eventstream"


def is_bedrock_host(host: str) -> bool:
    """bedrock-runtime.{region}.amazonaws.com (and the -fips variant)."""
    return host.startswith(("bedrock-runtime.", "bedrock-runtime-fips.")) and host.endswith(
        (".amazonaws.com", ".amazonaws.com.cn")
    )


def split_path(path: str) -> tuple[str | None, str | None]:
    """``/model/{modelId}/converse[-stream]`` -> (model id URL-decoded, endpoint)."""
    path = path.split("?", 1)[0]
    if not path.startswith("/model/"):
        return None, None
    rest = path[len("/model/") :]
    model, _, action = rest.rpartition("/")
    if action == "converse":
        endpoint = CONVERSE
    elif action == "converse-stream":
        endpoint = CONVERSE_STREAM
    else:
        return None, None
    return unquote(model) or None, endpoint


class _ToolUse(msgspec.Struct):
    name: str = ""
    toolUseId: str | None = None
    input: msgspec.Raw = msgspec.Raw()


class _ResultContent(msgspec.Struct):
    text: str | None = None
    json: msgspec.Raw = msgspec.Raw()


class _ToolResult(msgspec.Struct):
    content: list[_ResultContent] = []


class _Block(msgspec.Struct):
    text: str | None = None
    toolUse: _ToolUse | None = None
    toolResult: _ToolResult | None = None
    # Media blocks, only to count them (priced by pixels or pages, not bytes).
    image: msgspec.Raw = msgspec.Raw()
    document: msgspec.Raw = msgspec.Raw()
    video: msgspec.Raw = msgspec.Raw()


class _Message(msgspec.Struct):
    content: list[_Block] = []


class _SystemBlock(msgspec.Struct):
    text: str | None = None


class _ToolSpec(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    toolSpec: _ToolSpec | None = None


class _ToolConfig(msgspec.Struct):
    tools: list[_Tool] = []


class _InferenceConfig(msgspec.Struct):
    maxTokens: int | None = None


class _Request(msgspec.Struct):
    messages: list[_Message] = []
    system: list[_SystemBlock] = []
    toolConfig: _ToolConfig | None = None
    inferenceConfig: _InferenceConfig | None = None


_request = msgspec.json.Decoder(_Request)


def parse_request_body(endpoint: str, path: str, body: bytes) -> RequestInfo:
    """Parse a Converse request; the model id comes from the path (raises msgspec errors)."""
    req = _request.decode(body)
    seg = Segments()
    for i, sys_block in enumerate(req.system):
        seg.add(f"$.system[{i}].text", sys_block.text)
    for i, msg in enumerate(req.messages):
        for j, block in enumerate(msg.content):
            base = f"$.messages[{i}].content[{j}]"
            if block.text is not None:
                seg.add(f"{base}.text", block.text)
            elif block.toolUse is not None:
                seg.add(f"{base}.toolUse.input", raw_text(block.toolUse.input))
            elif block.toolResult is not None:
                for k, part in enumerate(block.toolResult.content):
                    if part.text is not None:
                        seg.add(f"{base}.toolResult.content[{k}].text", part.text)
                    elif part.json:
                        seg.add(f"{base}.toolResult.content[{k}].json", raw_text(part.json))
    tools = [
        t.toolSpec.name for t in (req.toolConfig.tools if req.toolConfig else ()) if t.toolSpec
    ]
    max_tokens = req.inferenceConfig.maxTokens if req.inferenceConfig else None
    return RequestInfo(
        provider="bedrock",
        endpoint=endpoint,
        model=split_path(path)[0],
        stream=endpoint == CONVERSE_STREAM,
        text=seg.items,
        tools=tools,
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=max_tokens,
        prompt_token_bound=prompt_token_bound(
            len(body),
            tools=bool(tools),
            media_parts=sum(
                bool(b.image) + bool(b.document) + bool(b.video)
                for m in req.messages
                for b in m.content
            ),
        ),
        completion_token_bound=completion_token_bound(max_tokens),
    )


class _Usage(msgspec.Struct):
    inputTokens: int | None = None
    outputTokens: int | None = None
    totalTokens: int | None = None
    cacheReadInputTokens: int | None = None
    cacheWriteInputTokens: int | None = None


def convert_usage(u: _Usage | None) -> Usage:
    """Normalised usage: cache reads/writes added into the prompt count."""
    if u is None:
        return Usage()
    cached = u.cacheReadInputTokens
    written = u.cacheWriteInputTokens
    prompt = None
    if u.inputTokens is not None:
        prompt = u.inputTokens + (cached or 0) + (written or 0)
    total = u.totalTokens
    if prompt is not None and u.outputTokens is not None:
        total = prompt + u.outputTokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=u.outputTokens,
        total_tokens=total,
        cached_tokens=cached,
        cache_write_tokens=written,
        source="reported" if prompt is not None or u.outputTokens is not None else "missing",
    )


class _Output(msgspec.Struct):
    message: _Message | None = None


class _Response(msgspec.Struct):
    output: _Output | None = None
    stopReason: str | None = None
    usage: _Usage | None = None
    message: str | None = None  # error bodies: {"message": "..."} (never copied out)


_response = msgspec.json.Decoder(_Response)


def parse_response_body(body: bytes) -> ResponseInfo:
    """Parse a buffered Converse response (never raises). The model is not in it."""
    try:
        resp = _response.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return response_error(exc)
    texts: list[str] = []
    calls: list[ToolCall] = []
    if resp.output is not None and resp.output.message is not None:
        for block in resp.output.message.content:
            if block.text:
                texts.append(block.text)
            elif block.toolUse is not None:
                tu = block.toolUse
                calls.append(ToolCall(name=tu.name, arguments=raw_text(tu.input), id=tu.toolUseId))
    text = "".join(texts)
    is_error = resp.output is None and resp.usage is None and resp.message is not None
    return ResponseInfo(
        usage=finalize_usage(
            convert_usage(resp.usage), len(text) + sum(len(c.arguments) for c in calls)
        ),
        text=text,
        tool_calls=calls,
        finish_reason=resp.stopReason,
        error="error" if is_error else None,
    )


class _StartToolUse(msgspec.Struct):
    name: str = ""
    toolUseId: str | None = None


class _Start(msgspec.Struct):
    toolUse: _StartToolUse | None = None


class _DeltaToolUse(msgspec.Struct):
    input: str = ""


class _Delta(msgspec.Struct):
    text: str | None = None
    toolUse: _DeltaToolUse | None = None


class _StreamEvent(msgspec.Struct):
    """Payload of any converse-stream event; which fields are set depends on the event type."""

    contentBlockIndex: int = 0
    start: _Start | None = None
    delta: _Delta | None = None
    stopReason: str | None = None
    usage: _Usage | None = None


_stream_event = msgspec.json.Decoder(_StreamEvent)


class ConverseStreamHandler(StreamHandler):
    """messageStart, contentBlockStart/Delta/Stop, messageStop, metadata (usage)."""

    def on_event(self, name: str, data: bytes) -> None:
        """Handle one event stream message."""
        if name.startswith("exception:"):
            self.error = name.split(":", 1)[1]
            self.done = True
            return
        if name not in ("contentBlockDelta", "contentBlockStart", "messageStop", "metadata"):
            return  # messageStart, contentBlockStop: nothing we need
        ev = _stream_event.decode(data)
        if name == "contentBlockDelta" and ev.delta is not None:
            if ev.delta.text:
                self.text.add(ev.delta.text)
            elif ev.delta.toolUse is not None:
                self.tools.add_arguments(ev.contentBlockIndex, ev.delta.toolUse.input)
        elif name == "contentBlockStart" and ev.start is not None and ev.start.toolUse is not None:
            tu = ev.start.toolUse
            self.tools.start(ev.contentBlockIndex, tu.name, tu.toolUseId)
        elif name == "messageStop":
            self.finish_reason = ev.stopReason
        elif name == "metadata":
            self.usage = convert_usage(ev.usage)
            self.done = True  # metadata is the last event of a complete stream


class Bedrock:
    """bedrock-runtime.{region}.amazonaws.com."""

    name = "bedrock"

    def match(self, host: str, path: str) -> str | None:
        """converse / converse-stream on a Bedrock Runtime host."""
        if not is_bedrock_host(host):
            return None
        return split_path(path)[1]

    def match_path(self, path: str) -> str | None:
        """Endpoint by path alone (traffic routed to this provider some other way)."""
        return split_path(path)[1]

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        """Model (from the path), text segments and tools (never raises)."""
        try:
            return parse_request_body(endpoint, path, body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            info = request_error(self.name, endpoint, exc)
            info.model = split_path(path)[0]
            info.stream = endpoint == CONVERSE_STREAM
            return info

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        """Parse a buffered response (an event stream body is replayed through the parser)."""
        if _is_eventstream(content_type) or (
            endpoint == CONVERSE_STREAM and body.lstrip()[:1] != b"{"
        ):
            return replay_stream(self, endpoint, body, EVENTSTREAM_TYPE)
        return parse_response_body(body)

    def stream_parser(
        self, endpoint: str, content_type: str, content_encoding: str | None
    ) -> StreamParser:
        """Event stream parser; a JSON body (an error) is buffered and parsed whole."""
        if _is_eventstream(content_type) or (
            endpoint == CONVERSE_STREAM and not content_type.lower().startswith("application/json")
        ):
            return FramedStreamParser(
                ConverseStreamHandler(), EventStreamSplitter(), content_encoding
            )
        return BufferedStreamParser(parse_response_body, content_encoding)

    def inject_stream_usage(self, endpoint: str, body: bytes) -> bytes | None:
        """Bedrock always reports usage in the metadata event."""
        return None


def _is_eventstream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == EVENTSTREAM_TYPE
