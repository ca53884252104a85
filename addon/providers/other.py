"""Providers whose bodies the proxy does not price: a host that is neither an LLM API nor MCP.

Egress of an agent to any other web API is recorded (host, method, path, status, bytes, latency)
so an operator sees where an agent sends data, but its bodies are never read, kept or scanned:
every parse answers an empty record. ``Unpriced`` is also the base of the MCP provider
(``addon/mcp.py``), which reads its requests but prices nothing.
"""

from __future__ import annotations

from typing import Any

from .base import RequestInfo, ResponseInfo, Usage


class NullParser:
    """A stream passed through untouched: nothing in it is read."""

    text_delta_callback: Any = None

    def feed(self, chunk: bytes) -> None:
        return None

    def finish(self) -> ResponseInfo:
        return ResponseInfo(usage=Usage(source="missing"))


class Unpriced:
    """No endpoint of its own, no usage, nothing to inject."""

    name = "other"

    def match(self, host: str, path: str) -> str | None:
        return None

    def match_path(self, path: str) -> str | None:
        return None

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        return RequestInfo(provider=self.name, endpoint=endpoint)

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        return ResponseInfo(usage=Usage(source="missing"))

    def stream_parser(
        self, endpoint: str, content_type: str, content_encoding: str | None
    ) -> NullParser:
        return NullParser()

    def inject_stream_usage(self, endpoint: str, body: bytes) -> bytes | None:
        return None


OTHER = Unpriced()
