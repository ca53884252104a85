"""Chat completions, and the completions endpoint's responses and streams (the same ``choices``):
request, buffered response, and ``data: {chunk}`` ... ``data: [DONE]`` streams."""

from __future__ import annotations

import msgspec

from ..base import RequestInfo, ResponseInfo, Segments, ToolCall, estimate_tokens, finalize_usage
from ..streaming import StreamHandler
from ..tokens import completion_token_bound, prompt_token_bound
from .content import FunctionCall, Named, Part, ToolDef, content_segments, media_parts, tool_names
from .endpoints import CHAT
from .usage import ErrorView, UsageView, convert_usage, error_label

# ---- request --------------------------------------------------------------------------------


class _ToolCallIn(msgspec.Struct):
    function: FunctionCall | None = None


class _Message(msgspec.Struct):
    role: str | None = None
    content: str | list[Part] | None = None
    tool_calls: list[_ToolCallIn] | None = None
    function_call: FunctionCall | None = None


class _ChatRequest(msgspec.Struct):
    model: str | None = None
    messages: list[_Message] = []
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    tools: list[ToolDef] | None = None
    functions: list[Named] | None = None


_chat_request = msgspec.json.Decoder(_ChatRequest)


def parse_request(provider: str, body: bytes) -> RequestInfo:
    req = _chat_request.decode(body)
    max_tokens = (
        req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    )
    seg = Segments()
    for i, msg in enumerate(req.messages):
        content_segments(seg, f"$.messages[{i}].content", msg.content)
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
        roles=[m.role or "" for m in req.messages],
        tools=tool_names(req.tools, req.functions),
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=max_tokens,
        prompt_token_bound=prompt_token_bound(
            len(body),
            tools=bool(req.tools or req.functions),
            media_parts=sum(media_parts(m.content) for m in req.messages),
        ),
        completion_token_bound=completion_token_bound(max_tokens, req.n),
    )


# ---- buffered response (chat and completions) -----------------------------------------------


class _RespToolCall(msgspec.Struct):
    id: str | None = None
    function: FunctionCall | None = None


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
    usage: UsageView | None = None
    error: ErrorView | str | None = None


_chat_response = msgspec.json.Decoder(_ChatResponse)


def parse_response(body: bytes) -> ResponseInfo:
    """A buffered chat or completions response; raises msgspec's errors (the caller's to catch)."""
    resp = _chat_response.decode(body)
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
            fn = call.function or FunctionCall()
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


# ---- stream ---------------------------------------------------------------------------------


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
    usage: UsageView | None = None


class _ChatChunk(msgspec.Struct):
    model: str | None = None
    choices: list[_StreamChoice] = []
    usage: UsageView | None = None
    x_groq: _XGroq | None = None  # Groq's older streams put usage here
    error: ErrorView | str | None = None


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
