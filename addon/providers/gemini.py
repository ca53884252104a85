"""Google Gemini API (generativelanguage.googleapis.com) and Vertex AI's Gemini endpoints.

``:generateContent`` answers one JSON object; ``:streamGenerateContent`` streams SSE with
``?alt=sse`` and otherwise a JSON array of the same objects, delivered piecewise. Gemini's
``candidatesTokenCount`` excludes thinking tokens, so ``completion_tokens`` adds
``thoughtsTokenCount`` (see ``base``); ``promptTokenCount`` already includes cached content.
"""

from __future__ import annotations

from urllib.parse import unquote

import msgspec

from .base import (
    RequestInfo,
    ResponseInfo,
    Segments,
    StreamParser,
    Usage,
    estimate_tokens,
    raw_text,
    replay_stream,
    request_error,
    response_error,
)
from .framing import JSONArraySplitter
from .openai import is_event_stream
from .sse import SSESplitter
from .streaming import BufferedStreamParser, FramedStreamParser, StreamHandler
from .tokens import completion_token_bound, prompt_token_bound

GENERATE = "generateContent"
STREAM_GENERATE = "streamGenerateContent"
GEMINI_HOSTS = frozenset({"generativelanguage.googleapis.com"})


def model_from_path(path: str) -> str | None:
    """``.../models/{model}:method`` -> model (also tunedModels/{m})."""
    path = path.split("?", 1)[0]
    head = path.rsplit(":", 1)[0]
    for marker in ("/models/", "/tunedModels/"):
        idx = head.rfind(marker)
        if idx >= 0:
            return unquote(head[idx + len(marker) :]) or None
    return None


def endpoint_from_path(path: str) -> str | None:
    """The method after the last ``:`` of a models path."""
    path = path.split("?", 1)[0]
    if "/models/" not in path and "/tunedModels/" not in path:
        return None
    method = path.rsplit(":", 1)[-1] if ":" in path else ""
    if method == GENERATE:
        return GENERATE
    if method == STREAM_GENERATE:
        return STREAM_GENERATE
    return None


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: msgspec.Raw = msgspec.Raw()


class _FunctionResponse(msgspec.Struct):
    name: str = ""
    response: msgspec.Raw = msgspec.Raw()


class _Part(msgspec.Struct):
    text: str | None = None
    thought: bool | None = None
    functionCall: _FunctionCall | None = None
    functionResponse: _FunctionResponse | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Named(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    functionDeclarations: list[_Named] | None = None
    function_declarations: list[_Named] | None = None


class _GenerationConfig(msgspec.Struct):
    maxOutputTokens: int | None = None
    max_output_tokens: int | None = None
    candidateCount: int | None = None
    candidate_count: int | None = None


class _Request(msgspec.Struct):
    """Google's JSON parser accepts camelCase and snake_case field names: we read both."""

    contents: list[_Content] = []
    systemInstruction: _Content | None = None
    system_instruction: _Content | None = None
    tools: list[_Tool] | None = None
    generationConfig: _GenerationConfig | None = None
    generation_config: _GenerationConfig | None = None


_request = msgspec.json.Decoder(_Request)


def _parts_segments(seg: Segments, base: str, parts: list[_Part]) -> None:
    for j, part in enumerate(parts):
        if part.text is not None:
            seg.add(f"{base}[{j}].text", part.text)
        elif part.functionCall is not None:
            seg.add(f"{base}[{j}].functionCall.args", raw_text(part.functionCall.args))
        elif part.functionResponse is not None:
            seg.add(
                f"{base}[{j}].functionResponse.response", raw_text(part.functionResponse.response)
            )


def parse_request_body(provider: str, endpoint: str, path: str, body: bytes) -> RequestInfo:
    """Parse a generateContent request; the model comes from the path (raises msgspec errors)."""
    req = _request.decode(body)
    seg = Segments()
    if req.systemInstruction is not None:
        _parts_segments(seg, "$.systemInstruction.parts", req.systemInstruction.parts)
    elif req.system_instruction is not None:
        _parts_segments(seg, "$.system_instruction.parts", req.system_instruction.parts)
    for i, content in enumerate(req.contents):
        _parts_segments(seg, f"$.contents[{i}].parts", content.parts)
    tools: list[str] = []
    for tool in req.tools or ():
        tools.extend(f.name for f in tool.functionDeclarations or tool.function_declarations or ())
    config = req.generationConfig or req.generation_config
    max_tokens = choices = None
    if config is not None:
        max_tokens = config.maxOutputTokens or config.max_output_tokens
        choices = config.candidateCount or config.candidate_count
    # A part that is neither text nor a function call/response is media (inlineData, fileData).
    media = sum(
        1
        for content in req.contents
        for part in content.parts
        if part.text is None and part.functionCall is None and part.functionResponse is None
    )
    return RequestInfo(
        provider=provider,
        endpoint=endpoint,
        model=model_from_path(path),
        stream=endpoint == STREAM_GENERATE,
        text=seg.items,
        tools=tools,
        estimated_prompt_tokens=estimate_tokens(seg.chars),
        max_tokens=max_tokens,
        prompt_token_bound=prompt_token_bound(len(body), tools=bool(tools), media_parts=media),
        completion_token_bound=completion_token_bound(max_tokens, choices),
    )


class _UsageMetadata(msgspec.Struct):
    promptTokenCount: int | None = None
    candidatesTokenCount: int | None = None
    totalTokenCount: int | None = None
    cachedContentTokenCount: int | None = None
    thoughtsTokenCount: int | None = None
    toolUsePromptTokenCount: int | None = None


class _Candidate(msgspec.Struct):
    content: _Content | None = None
    finishReason: str | None = None


class _Error(msgspec.Struct):
    status: str | None = None
    code: int | None = None


class _Response(msgspec.Struct):
    candidates: list[_Candidate] = []
    usageMetadata: _UsageMetadata | None = None
    modelVersion: str | None = None
    error: _Error | None = None


_response = msgspec.json.Decoder(_Response)
_response_array = msgspec.json.Decoder(list[_Response])


def convert_usage(meta: _UsageMetadata | None) -> Usage:
    """Normalised usage (thoughts folded into completion, tool-use prompt into prompt)."""
    if meta is None:
        return Usage()
    prompt = meta.promptTokenCount
    if prompt is not None and meta.toolUsePromptTokenCount:
        prompt += meta.toolUsePromptTokenCount
    completion = meta.candidatesTokenCount
    if meta.thoughtsTokenCount:
        completion = (completion or 0) + meta.thoughtsTokenCount
    if completion is None and prompt is not None:
        completion = 0  # Gemini omits candidatesTokenCount when nothing was generated
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=meta.totalTokenCount,
        cached_tokens=meta.cachedContentTokenCount,
        reasoning_tokens=meta.thoughtsTokenCount,
        source="reported" if prompt is not None else "missing",
    )


def _error_label(err: _Error | None) -> str | None:
    if err is None:
        return None
    return err.status or (str(err.code) if err.code is not None else "error")


class GenerateHandler(StreamHandler):
    """Each event / array element is a whole GenerateContentResponse; usage is cumulative."""

    def __init__(self, *, array: bool) -> None:
        super().__init__()
        #: For the JSON array the closing "]" ends the stream; for SSE a finishReason does.
        self.array = array
        self._calls = 0

    def on_event(self, name: str, data: bytes) -> None:
        """Handle one response object."""
        self.absorb(_response.decode(data))

    def absorb(self, resp: _Response) -> None:
        """Fold one response object into the state."""
        if resp.modelVersion:
            self.model = resp.modelVersion
        for index, cand in enumerate(resp.candidates):
            if cand.finishReason:
                self.finish_reason = cand.finishReason
                if not self.array:
                    self.done = True
            if cand.content is None:
                continue
            for part in cand.content.parts:
                if part.text and not part.thought:
                    self.text.add(part.text)
                elif part.functionCall is not None:
                    # Gemini sends each function call whole, never split across chunks.
                    key = (index, self._calls)
                    self._calls += 1
                    self.tools.start(key, part.functionCall.name, None)
                    self.tools.set_arguments(key, raw_text(part.functionCall.args))
        if resp.usageMetadata is not None:
            self.usage = convert_usage(resp.usageMetadata)
        if resp.error is not None:
            self.error = _error_label(resp.error)
            self.done = True


class _ArrayStreamParser(FramedStreamParser):
    """The JSON-array variant: complete once the splitter saw the closing bracket."""

    __slots__ = ("_splitter",)

    def __init__(self, content_encoding: str | None) -> None:
        self._splitter = JSONArraySplitter()
        super().__init__(GenerateHandler(array=True), self._splitter, content_encoding)

    def finish(self) -> ResponseInfo:
        """Mark done when the array closed, then finish as usual."""
        if self._splitter.closed or (self.handler.error and not self._splitter.pending):
            self.handler.done = True
        return super().finish()


def parse_response_body(body: bytes) -> ResponseInfo:
    """Parse a buffered response: one object, or a whole streamed array (never raises)."""
    handler = GenerateHandler(array=False)
    try:
        if body.lstrip()[:1] == b"[":
            for resp in _response_array.decode(body):
                handler.absorb(resp)
        else:
            handler.absorb(_response.decode(body))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return response_error(exc)
    return handler.result()


class Gemini:
    """Gemini Developer API, or Vertex AI's publisher models when built with ``vertex=True``."""

    def __init__(self, name: str = "gemini", *, vertex: bool = False) -> None:
        self.name = name
        self.vertex = vertex

    def __repr__(self) -> str:
        return f"Gemini({self.name!r})"

    def match(self, host: str, path: str) -> str | None:
        """``/v1beta/models/{model}:generateContent`` and friends."""
        if self.vertex:
            if not (
                host == "aiplatform.googleapis.com" or host.endswith("-aiplatform.googleapis.com")
            ):
                return None
        elif host not in GEMINI_HOSTS:
            return None
        return endpoint_from_path(path)

    def match_path(self, path: str) -> str | None:
        """Endpoint by path alone (traffic routed to this provider some other way)."""
        return endpoint_from_path(path)

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        """Model (from the path), text segments and tools (never raises)."""
        try:
            return parse_request_body(self.name, endpoint, path, body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            info = request_error(self.name, endpoint, exc)
            info.model = model_from_path(path)
            info.stream = endpoint == STREAM_GENERATE
            return info

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        """Parse a buffered response (SSE bodies are replayed through the stream parser)."""
        if is_event_stream(content_type):
            return replay_stream(self, endpoint, body, content_type)
        return parse_response_body(body)

    def stream_parser(
        self, endpoint: str, content_type: str, content_encoding: str | None
    ) -> StreamParser:
        """SSE (``alt=sse``), a JSON array (streamGenerateContent), or one buffered object."""
        if is_event_stream(content_type):
            return FramedStreamParser(GenerateHandler(array=False), SSESplitter(), content_encoding)
        if endpoint == STREAM_GENERATE:
            return _ArrayStreamParser(content_encoding)
        return BufferedStreamParser(parse_response_body, content_encoding)

    def inject_stream_usage(self, endpoint: str, body: bytes) -> bytes | None:
        """Gemini always reports usage."""
        return None
