"""The Responses API: request (``input``, ``instructions``), buffered response (``output``
items) and typed stream events (``response.output_text.delta`` ... ``response.completed``)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..base import RequestInfo, ResponseInfo, Segments, ToolCall, estimate_tokens, finalize_usage
from ..streaming import StreamHandler
from ..tokens import completion_token_bound, prompt_token_bound
from .content import Part, ToolDef, content_segments, media_parts, tool_names
from .endpoints import RESPONSES
from .usage import ErrorView, UsageView, convert_usage, error_label

# ---- request --------------------------------------------------------------------------------


class _ResponsesItem(msgspec.Struct):
    type: str | None = None
    role: str | None = None
    content: str | list[Part] | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[Part] | None = None


class _ResponsesRequest(msgspec.Struct):
    model: str | None = None
    input: str | list[_ResponsesItem] | None = None
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: int | None = None
    tools: list[ToolDef] | None = None


_responses_request = msgspec.json.Decoder(_ResponsesRequest)


def parse_request(provider: str, body: bytes) -> RequestInfo:
    req = _responses_request.decode(body)
    seg = Segments()
    seg.add("$.instructions", req.instructions)
    if isinstance(req.input, str):
        seg.add("$.input", req.input)
    elif req.input:
        for i, item in enumerate(req.input):
            content_segments(seg, f"$.input[{i}].content", item.content)
            seg.add(f"$.input[{i}].arguments", item.arguments)
            content_segments(seg, f"$.input[{i}].output", item.output)
    return RequestInfo(
        provider=provider,
        endpoint=RESPONSES,
        model=req.model,
        stream=bool(req.stream),
        text=seg.items,
        roles=[item.role or "" for item in req.input] if isinstance(req.input, list) else [],
        tools=tool_names(req.tools),
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=req.max_output_tokens,
        prompt_token_bound=prompt_token_bound(
            len(body),
            tools=bool(req.tools),
            media_parts=sum(
                media_parts(item.content) + media_parts(item.output)
                for item in (req.input if isinstance(req.input, list) else ())
            ),
        ),
        completion_token_bound=completion_token_bound(req.max_output_tokens),
    )


# ---- buffered response ----------------------------------------------------------------------


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
    usage: UsageView | None = None
    incomplete_details: _Incomplete | None = None
    error: ErrorView | None = None


_responses_response = msgspec.json.Decoder(_ResponsesResponse)


def parse_response(body: bytes) -> ResponseInfo:
    """A buffered Responses API response; raises msgspec's errors (the caller's to catch)."""
    return _responses_info(_responses_response.decode(body))


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


# ---- stream ---------------------------------------------------------------------------------


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
