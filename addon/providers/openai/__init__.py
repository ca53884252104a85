"""OpenAI and OpenAI-compatible APIs: chat completions, Responses, embeddings, completions.

The same dialect serves OpenAI itself, Azure OpenAI (``azure.py``) and every compatible host
(Mistral, Groq, DeepSeek, OpenRouter, xAI, Together, Fireworks, vLLM ...): only the host table and
``supports_stream_options`` differ.

By endpoint: ``chat.py`` (chat completions, and completions' responses and streams),
``responses.py`` (the Responses API), ``legacy.py`` (completions and embeddings requests,
embeddings responses); ``content.py`` and ``usage.py`` hold the views they share,
``endpoints.py`` the endpoint names by path. This module: the provider, and the dispatch.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from ..base import (
    RequestInfo,
    ResponseInfo,
    StreamParser,
    replay_stream,
    request_error,
    response_error,
)
from ..sse import SSESplitter
from ..streaming import BufferedStreamParser, FramedStreamParser, StreamHandler
from . import chat, legacy, responses
from .chat import ChatStreamHandler
from .endpoints import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, is_event_stream, openai_endpoint
from .responses import ResponsesStreamHandler
from .usage import convert_usage, error_label

__all__ = [
    "CHAT",
    "COMPATIBLE_HOSTS",
    "COMPLETIONS",
    "EMBEDDINGS",
    "RESPONSES",
    "ChatStreamHandler",
    "OpenAICompatible",
    "ResponsesStreamHandler",
    "convert_usage",
    "error_label",
    "is_event_stream",
    "openai_endpoint",
    "parse_openai_response",
]


def parse_openai_response(endpoint: str, body: bytes) -> ResponseInfo:
    """Parse a buffered OpenAI-style response body (never raises)."""
    try:
        if endpoint == RESPONSES:
            return responses.parse_response(body)
        if endpoint == EMBEDDINGS:
            return legacy.parse_embeddings_response(body)
        return chat.parse_response(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return response_error(exc)


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
                return chat.parse_request(self.name, body)
            if endpoint == RESPONSES:
                return responses.parse_request(self.name, body)
            return legacy.parse_request(self.name, endpoint, body)
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
