"""The generic stream parser: decoder -> framer -> provider handler.

Providers supply a ``StreamHandler`` subclass that understands their events and a framer that cuts
the decoded bytes into events (SSE, NDJSON, JSON array, AWS event stream).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import msgspec

from .base import (
    MAX_BUFFERED_BODY_BYTES,
    ResponseInfo,
    TextCollector,
    TextDeltaCallback,
    ToolCallCollector,
    Usage,
    error_text,
    finalize_usage,
)
from .decoding import Decoder, make_decoder
from .sse import Event


class Framer(Protocol):
    """Cuts decoded bytes into events."""

    error: str | None

    @property
    def pending(self) -> bool:
        """True when an incomplete frame is held."""

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes, return completed events."""

    def finish(self) -> list[Event]:
        """End of stream."""


class StreamHandler:
    """State a provider's events build up; subclasses implement ``on_event``."""

    def __init__(self, callback: TextDeltaCallback | None = None) -> None:
        self.text = TextCollector(callback)
        self.tools = ToolCallCollector()
        self.usage = Usage()
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.parse_error: str | None = None
        #: Set when the provider's end-of-stream marker was seen.
        self.done = False

    def on_event(self, name: str, data: bytes) -> None:
        """Handle one event; may raise msgspec errors (recorded by the caller)."""
        raise NotImplementedError

    def result(self) -> ResponseInfo:
        """What was seen so far, usage finalised."""
        usage = finalize_usage(self.usage, self.text.chars + self.tools.chars())
        return ResponseInfo(
            model=self.model,
            usage=usage,
            text=self.text.text(),
            tool_calls=self.tools.calls(),
            finish_reason=self.finish_reason,
            parse_error=self.parse_error,
            error=self.error,
            text_truncated=self.text.truncated or self.tools.truncated,
        )


class FramedStreamParser:
    """``StreamParser`` over a handler and a framer; never raises from ``feed``/``finish``."""

    __slots__ = ("_decoder", "_error", "_framer", "_result", "handler")

    def __init__(
        self, handler: StreamHandler, framer: Framer, content_encoding: str | None
    ) -> None:
        self.handler = handler
        self._framer = framer
        self._error: str | None = None
        self._result: ResponseInfo | None = None
        self._decoder: Decoder | None
        try:
            self._decoder = make_decoder(content_encoding)
        except ValueError as exc:
            self._decoder = None
            self._error = str(exc)

    @property
    def text_delta_callback(self) -> TextDeltaCallback | None:
        """Called with each assistant text delta (for the streaming PII scan)."""
        return self.handler.text.callback

    @text_delta_callback.setter
    def text_delta_callback(self, callback: TextDeltaCallback | None) -> None:
        self.handler.text.callback = callback

    def feed(self, chunk: bytes) -> None:
        """Consume raw body bytes as they arrive (still content-encoded)."""
        if not chunk or self._error is not None or self._decoder is None:
            return
        try:
            data = self._decoder.decode(chunk)
            if data:
                self._dispatch(self._framer.feed(data))
        except Exception as exc:
            self._error = error_text(exc)

    def _dispatch(self, events: list[Event]) -> None:
        handler = self.handler
        for name, payload in events:
            try:
                handler.on_event(name, payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # One bad event does not hide the rest of the stream (usage usually comes last).
                if handler.parse_error is None:
                    handler.parse_error = error_text(exc)

    def finish(self) -> ResponseInfo:
        """End of stream, client disconnect or truncation: return what was seen."""
        if self._result is not None:
            return self._result
        if self._error is None and self._decoder is not None:
            try:
                tail = self._decoder.flush()
                if tail:
                    self._dispatch(self._framer.feed(tail))
                self._dispatch(self._framer.finish())
            except Exception as exc:
                self._error = error_text(exc)
        info = self.handler.result()
        problem = self._error or self._framer.error
        if problem is None and not self.handler.done:
            problem = "truncated stream: no end-of-stream marker"
        if problem is not None:
            info.parse_error = (
                problem if info.parse_error is None else f"{problem}; {info.parse_error}"
            )
        self._result = info
        return info


class BufferedStreamParser:
    """For a body that is not in the expected streaming format (e.g. a JSON error answer).

    Decodes and keeps the body up to ``MAX_BUFFERED_BODY_BYTES``, then parses it whole.
    """

    __slots__ = (
        "_chunks",
        "_decoder",
        "_error",
        "_parse",
        "_result",
        "_size",
        "text_delta_callback",
    )

    def __init__(
        self, parse: Callable[[bytes], ResponseInfo], content_encoding: str | None
    ) -> None:
        self._parse = parse
        self._chunks: list[bytes] = []
        self._size = 0
        self._error: str | None = None
        self._result: ResponseInfo | None = None
        self.text_delta_callback: TextDeltaCallback | None = None
        self._decoder: Decoder | None
        try:
            self._decoder = make_decoder(content_encoding)
        except ValueError as exc:
            self._decoder = None
            self._error = str(exc)

    def feed(self, chunk: bytes) -> None:
        """Decode and keep the chunk (within the cap)."""
        if not chunk or self._error is not None or self._decoder is None:
            return
        try:
            data = self._decoder.decode(chunk)
        except Exception as exc:
            self._error = error_text(exc)
            return
        self._size += len(data)
        if self._size > MAX_BUFFERED_BODY_BYTES:
            self._error = f"body larger than {MAX_BUFFERED_BODY_BYTES} bytes"
            self._chunks = []
            return
        self._chunks.append(data)

    def finish(self) -> ResponseInfo:
        """Parse the whole body."""
        if self._result is not None:
            return self._result
        if self._error is None and self._decoder is not None:
            try:
                self._chunks.append(self._decoder.flush())
            except Exception as exc:
                self._error = error_text(exc)
        if self._error is not None:
            self._result = ResponseInfo(usage=finalize_usage(Usage(), 0), parse_error=self._error)
        else:
            self._result = self._parse(b"".join(self._chunks))
            if self.text_delta_callback is not None and self._result.text:
                with contextlib.suppress(Exception):  # observers must not break parsing
                    self.text_delta_callback(self._result.text)
        return self._result
