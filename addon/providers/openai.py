"""OpenAI and OpenAI-compatible APIs: chat completions, Responses, embeddings, completions.

The same dialect serves OpenAI itself, Azure OpenAI (``azure.py``) and every compatible host
(Mistral, Groq, DeepSeek, OpenRouter, xAI, Together, Fireworks, vLLM ...): only the host table and
``supports_stream_options`` differ.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

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
    replay_stream,
    request_error,
    response_error,
)
from .sse import SSESplitter
from .streaming import BufferedStreamParser, FramedStreamParser, StreamHandler
from .tokens import completion_token_bound, prompt_token_bound

CHAT = "chat.completions"
RESPONSES = "responses"
EMBEDDINGS = "embeddings"
COMPLETIONS = "completions"


def openai_endpoint(path: str) -> str | None:
    """Endpoint of an OpenAI-style path, by suffix (any prefix: /v1, /openai/v1 ...)."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return CHAT
    if path.endswith("/completions"):
        return COMPLETIONS
    if path.endswith("/embeddings"):
        return EMBEDDINGS
    if path.endswith("/responses"):
        return RESPONSES
    return None


# ---- request views -------------------------------------------------------------------------


class _Named(msgspec.Struct):
    name: str = ""


class _FunctionCall(msgspec.Struct):
    name: str = ""
    arguments: str | None = None


class _ToolCallIn(msgspec.Struct):
    function: _FunctionCall | None = None


class _Part(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _Message(msgspec.Struct):
    content: str | list[_Part] | None = None
    tool_calls: list[_ToolCallIn] | None = None
    function_call: _FunctionCall | None = None


class _ToolDef(msgspec.Struct):
    type: str = ""
    function: _Named | None = None
    name: str | None = None  # Responses API tools are flat


class _ChatRequest(msgspec.Struct):
    model: str | None = None
    messages: list[_Message] = []
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    tools: list[_ToolDef] | None = None
    functions: list[_Named] | None = None


class _ResponsesItem(msgspec.Struct):
    type: str | None = None
    content: str | list[_Part] | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[_Part] | None = None


class _ResponsesRequest(msgspec.Struct):
    model: str | None = None
    input: str | list[_ResponsesItem] | None = None
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: int | None = None
    tools: list[_ToolDef] | None = None


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
_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal", ""})


def _media_parts(content: str | list[_Part] | None) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if part.type not in _TEXT_PARTS)


_chat_request = msgspec.json.Decoder(_ChatRequest)
_responses_request = msgspec.json.Decoder(_ResponsesRequest)
_legacy_request = msgspec.json.Decoder(_LegacyRequest)


def _tool_names(tools: list[_ToolDef] | None, functions: list[_Named] | None = None) -> list[str]:
    names: list[str] = []
    for tool in tools or ():
        if tool.function is not None and tool.function.name:
            names.append(tool.function.name)
        elif tool.name:
            names.append(tool.name)
        elif tool.type:
            names.append(tool.type)  # built-in tools (web_search, file_search ...)
    names.extend(f.name for f in functions or () if f.name)
    return names


def _content_segments(seg: Segments, base: str, content: str | list[_Part] | None) -> None:
    if isinstance(content, str):
        seg.add(base, content)
    elif content:
        for j, part in enumerate(content):
            seg.add(f"{base}[{j}].text", part.text)


def _parse_chat(provider: str, body: bytes) -> RequestInfo:
    req = _chat_request.decode(body)
    max_tokens = (
        req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    )
    seg = Segments()
    for i, msg in enumerate(req.messages):
        _content_segments(seg, f"$.messages[{i}].content", msg.content)
        for k, call in enumerate(msg.tool_calls or ()):
            if call.function is not None:
                seg.add(
                    f"$.messages[{i}].tool_calls[{k}].function.arguments", call.function.arguments
                )
        if msg.function_call is not None:
            seg.add(f"$.messages[{i}].function_call.arguments", msg.function_call.arguments)
    return RequestInfo(
        provider=provider,
        endpoint=CHAT,
        model=req.model,
        stream=bool(req.stream),
        text=seg.items,
        tools=_tool_names(req.tools, req.functions),
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=max_tokens,
        prompt_token_bound=prompt_token_bound(
            len(body),
            tools=bool(req.tools or req.functions),
            media_parts=sum(_media_parts(m.content) for m in req.messages),
        ),
        completion_token_bound=completion_token_bound(max_tokens, req.n),
    )


def _parse_responses(provider: str, body: bytes) -> RequestInfo:
    req = _responses_request.decode(body)
    seg = Segments()
    seg.add("$.instructions", req.instructions)
    if isinstance(req.input, str):
        seg.add("$.input", req.input)
    elif req.input:
        for i, item in enumerate(req.input):
            _content_segments(seg, f"$.input[{i}].content", item.content)
            seg.add(f"$.input[{i}].arguments", item.arguments)
            _content_segments(seg, f"$.input[{i}].output", item.output)
    return RequestInfo(
        provider=provider,
        endpoint=RESPONSES,
        model=req.model,
        stream=bool(req.stream),
        text=seg.items,
        tools=_tool_names(req.tools),
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=req.max_output_tokens,
        prompt_token_bound=prompt_token_bound(
            len(body),
            tools=bool(req.tools),
            media_parts=sum(
                _media_parts(item.content) + _media_parts(item.output)
                for item in (req.input if isinstance(req.input, list) else ())
            ),
        ),
        completion_token_bound=completion_token_bound(req.max_output_tokens),
    )


def _any_text_segments(seg: Segments, path: str, value: Any) -> None:
    """Strings or lists of strings; token-id arrays carry no text we could scan."""
    if isinstance(value, str):
        seg.add(path, value)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                seg.add(f"{path}[{i}]", item)


def _parse_legacy(provider: str, endpoint: str, body: bytes) -> RequestInfo:
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


# ---- response views ------------------------------------------------------------------------


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
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


class _Error(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None


def error_label(err: _Error | str | None) -> str | None:
    """Type/code of a provider error, never its message (it may echo user data or keys)."""
    if err is None:
        return None
    if isinstance(err, str):
        return "error"
    return str(err.code or err.type or "error")


def convert_usage(u: _Usage | None) -> Usage:
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


class _RespToolCall(msgspec.Struct):
    id: str | None = None
    function: _FunctionCall | None = None


class _RespMessage(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_RespToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _RespMessage | None = None
    text: str | None = None  # completions
    finish_reason: str | None = None


class _ChatResponse(msgspec.Struct):
    model: str | None = None
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _Error | str | None = None


class _OutContent(msgspec.Struct):
    type: str = ""
    text: str | None = None
    refusal: str | None = None


class _OutItem(msgspec.Struct):
    type: str = ""
    content: list[_OutContent] | None = None
    name: str | None = None
    arguments: str | None = None
    call_id: str | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _ResponsesResponse(msgspec.Struct):
    model: str | None = None
    status: str | None = None
    output: list[_OutItem] = []
    usage: _Usage | None = None
    incomplete_details: _Incomplete | None = None
    error: _Error | None = None


class _EmbeddingsResponse(msgspec.Struct):
    """``data`` (the vectors) is deliberately not declared: msgspec skips it without building it."""

    model: str | None = None
    usage: _Usage | None = None
    error: _Error | str | None = None


_chat_response = msgspec.json.Decoder(_ChatResponse)
_responses_response = msgspec.json.Decoder(_ResponsesResponse)
_embeddings_response = msgspec.json.Decoder(_EmbeddingsResponse)


def _responses_info(resp: _ResponsesResponse) -> ResponseInfo:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in resp.output:
        if item.type == "message":
            for c in item.content or ():
                if c.text:
                    texts.append(c.text)
                elif c.refusal:
                    texts.append(c.refusal)
        elif item.type == "function_call":
            calls.append(
                ToolCall(name=item.name or "", arguments=item.arguments or "", id=item.call_id)
            )
    finish = resp.status
    if resp.incomplete_details is not None and resp.incomplete_details.reason:
        finish = resp.incomplete_details.reason
    text = "".join(texts)
    return ResponseInfo(
        model=resp.model,
        usage=finalize_usage(convert_usage(resp.usage), len(text)),
        text=text,
        tool_calls=calls,
        finish_reason=finish,
        error=error_label(resp.error),
    )


def parse_openai_response(endpoint: str, body: bytes) -> ResponseInfo:
    """Parse a buffered OpenAI-style response body (never raises)."""
    try:
        if endpoint == RESPONSES:
            return _responses_info(_responses_response.decode(body))
        if endpoint == EMBEDDINGS:
            emb = _embeddings_response.decode(body)
            usage = convert_usage(emb.usage)
            if usage.prompt_tokens is not None and usage.completion_tokens is None:
                usage.completion_tokens = 0  # embeddings produce no tokens
            return ResponseInfo(
                model=emb.model, usage=finalize_usage(usage, 0), error=error_label(emb.error)
            )
        resp = _chat_response.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return response_error(exc)
    texts: list[str] = []
    calls: list[ToolCall] = []
    finish: str | None = None
    for choice in resp.choices:
        finish = finish or choice.finish_reason
        if choice.text:
            texts.append(choice.text)
        msg = choice.message
        if msg is None:
            continue
        if msg.content:
            texts.append(msg.content)
        elif msg.refusal:
            texts.append(msg.refusal)
        for call in msg.tool_calls or ():
            fn = call.function or _FunctionCall()
            calls.append(ToolCall(name=fn.name, arguments=fn.arguments or "", id=call.id))
    text = "".join(texts)
    return ResponseInfo(
        model=resp.model,
        usage=finalize_usage(
            convert_usage(resp.usage), len(text) + sum(len(c.arguments) for c in calls)
        ),
        text=text,
        tool_calls=calls,
        finish_reason=finish,
        error=error_label(resp.error),
    )


# ---- streams -------------------------------------------------------------------------------


class _DeltaFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _DeltaToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _DeltaFunction | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_DeltaToolCall] | None = None


class _StreamChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class _XGroq(msgspec.Struct):
    usage: _Usage | None = None


class _ChatChunk(msgspec.Struct):
    model: str | None = None
    choices: list[_StreamChoice] = []
    usage: _Usage | None = None
    x_groq: _XGroq | None = None  # Groq's older streams put usage here
    error: _Error | str | None = None


_chat_chunk = msgspec.json.Decoder(_ChatChunk)


class ChatStreamHandler(StreamHandler):
    """``data: {chunk}`` ... ``data: [DONE]`` for chat completions and completions."""

    def on_event(self, name: str, data: bytes) -> None:
        """Handle one SSE event."""
        if data == b"[DONE]":
            self.done = True
            return
        chunk = _chat_chunk.decode(data)
        if chunk.model and self.model is None:
            self.model = chunk.model
        for choice in chunk.choices:
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            if choice.text:
                self.text.add(choice.text)
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                self.text.add(delta.content)
            elif delta.refusal:
                self.text.add(delta.refusal)
            for tc in delta.tool_calls or ():
                key = (choice.index, tc.index)
                fn = tc.function
                self.tools.start(key, fn.name if fn else None, tc.id)
                if fn is not None and fn.arguments:
                    self.tools.add_arguments(key, fn.arguments)
        usage = chunk.usage or (chunk.x_groq.usage if chunk.x_groq is not None else None)
        if usage is not None:
            self.usage = convert_usage(usage)
        if chunk.error is not None:
            self.error = error_label(chunk.error)


class _StreamEvent(msgspec.Struct):
    type: str = ""
    delta: Any = None  # a string for the events we read; other event types vary
    output_index: int = 0
    arguments: str | None = None
    item: _OutItem | None = None
    response: _ResponsesResponse | None = None
    code: str | None = None


_stream_event = msgspec.json.Decoder(_StreamEvent)
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamHandler(StreamHandler):
    """Responses API typed events (``response.output_text.delta`` ... ``response.completed``)."""

    def on_event(self, name: str, data: bytes) -> None:
        """Handle one SSE event."""
        if data == b"[DONE]":  # some compatible servers add it; the terminal event decides
            return
        ev = _stream_event.decode(data)
        kind = ev.type or name
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            if isinstance(ev.delta, str):
                self.text.add(ev.delta)
        elif kind == "response.function_call_arguments.delta":
            if isinstance(ev.delta, str):
                self.tools.add_arguments(ev.output_index, ev.delta)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = ev.item
            if item is not None and item.type == "function_call":
                self.tools.start(ev.output_index, item.name, item.call_id)
                if kind == "response.output_item.done" and item.arguments is not None:
                    self.tools.set_arguments(ev.output_index, item.arguments)
        elif kind == "response.created" or kind == "response.in_progress":
            if ev.response is not None and ev.response.model:
                self.model = ev.response.model
        elif kind in _TERMINAL:
            self.done = True
            resp = ev.response
            if resp is not None:
                self.model = resp.model or self.model
                self.usage = convert_usage(resp.usage)
                self.finish_reason = resp.status
                if resp.incomplete_details is not None and resp.incomplete_details.reason:
                    self.finish_reason = resp.incomplete_details.reason
                if resp.error is not None:
                    self.error = error_label(resp.error)
        elif kind == "error":
            self.error = ev.code or "error"
            self.done = True  # the server ends the stream after an error event


def is_event_stream(content_type: str) -> bool:
    """True for ``text/event-stream`` (any parameters)."""
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


class OpenAICompatible:
    """One OpenAI-dialect provider: a name and the hosts it answers on."""

    def __init__(
        self, name: str, hosts: Collection[str] = (), *, supports_stream_options: bool = True
    ) -> None:
        self.name = name
        self.hosts = frozenset(hosts)
        #: Whether the host accepts ``stream_options`` (some compatible APIs reject unknown
        #: fields, and most of those report usage in the last chunk anyway).
        self.supports_stream_options = supports_stream_options

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def match(self, host: str, path: str) -> str | None:
        """Endpoint on one of our hosts, by path suffix."""
        if host not in self.hosts:
            return None
        return openai_endpoint(path)

    def match_path(self, path: str) -> str | None:
        """Endpoint by path alone (traffic routed to this provider some other way)."""
        return openai_endpoint(path)

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        """Model, stream flag, text segments and tools of a request (never raises)."""
        try:
            if endpoint == CHAT:
                return _parse_chat(self.name, body)
            if endpoint == RESPONSES:
                return _parse_responses(self.name, body)
            return _parse_legacy(self.name, endpoint, body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return request_error(self.name, endpoint, exc)

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        """Parse a buffered response (an SSE body that was buffered anyway is replayed)."""
        if is_event_stream(content_type):
            return replay_stream(self, endpoint, body, content_type)
        return parse_openai_response(endpoint, body)

    def stream_parser(
        self, endpoint: str, content_type: str, content_encoding: str | None
    ) -> StreamParser:
        """Incremental parser; a non-SSE body (e.g. a JSON error) is buffered and parsed whole."""
        if not is_event_stream(content_type):
            return BufferedStreamParser(
                lambda body: parse_openai_response(endpoint, body), content_encoding
            )
        handler: StreamHandler = (
            ResponsesStreamHandler() if endpoint == RESPONSES else ChatStreamHandler()
        )
        return FramedStreamParser(handler, SSESplitter(), content_encoding)

    def inject_stream_usage(self, endpoint: str, body: bytes) -> bytes | None:
        """Ask for the final usage chunk when a chat/completions stream did not."""
        if endpoint not in (CHAT, COMPLETIONS) or not self.supports_stream_options:
            return None
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return None
        if not isinstance(doc, dict) or doc.get("stream") is not True:
            return None
        options = doc.get("stream_options")
        if options is None:
            doc["stream_options"] = {"include_usage": True}
        elif isinstance(options, dict) and "include_usage" not in options:
            options["include_usage"] = True
        else:
            return None  # explicitly set (true or false) or malformed: the client decided
        return msgspec.json.encode(doc)


#: Well-known OpenAI-compatible hosts. Names match the pricing table's provider names.
COMPATIBLE_HOSTS: dict[str, tuple[tuple[str, ...], bool]] = {
    # name: (hosts, supports stream_options)
    "openai": (("api.openai.com",), True),
    "mistral": (("api.mistral.ai", "codestral.mistral.ai"), False),
    "groq": (("api.groq.com",), True),
    "deepseek": (("api.deepseek.com",), True),
    "openrouter": (("openrouter.ai",), True),
    "xai": (("api.x.ai",), True),
    "together": (("api.together.xyz", "api.together.ai"), False),
    "fireworks": (("api.fireworks.ai",), False),
    "perplexity": (("api.perplexity.ai",), False),
    "cerebras": (("api.cerebras.ai",), True),
}
