"""Incremental content-decoding of streamed bodies (mitmproxy hands the stream tee encoded bytes).

``make_decoder(encoding)`` returns an object with ``decode(chunk) -> bytes`` and
``flush() -> bytes``. Identity is a pass-through. Output per call is bounded for gzip/deflate/br
(``MAX_PIECE`` bytes are produced per step and everything is concatenated only up to
``MAX_DECODED_BYTES`` in total) so a compression bomb cannot blow the parser's memory; zstd's
streaming API has no output limit, so it is bounded in total only.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli
import zstandard

#: Total decoded bytes a parser accepts from one body before it stops decoding.
MAX_DECODED_BYTES = 256 * 1024 * 1024
#: Decoded bytes produced per internal step for the codecs that support a limit.
MAX_PIECE = 4 * 1024 * 1024


class DecodeLimitError(Exception):
    """The body decoded to more than ``MAX_DECODED_BYTES``."""


class Decoder(Protocol):
    """Incremental decoder of one body."""

    def decode(self, chunk: bytes) -> bytes:
        """Decode the next encoded chunk."""

    def flush(self) -> bytes:
        """Decode whatever is left at the end of the body."""


class IdentityDecoder:
    """No content-encoding."""

    __slots__ = ()

    def decode(self, chunk: bytes) -> bytes:
        """Return the chunk as is."""
        return chunk

    def flush(self) -> bytes:
        """Nothing is ever held back."""
        return b""


class _Budget:
    """Counts decoded bytes against ``MAX_DECODED_BYTES``."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0

    def spend(self, n: int) -> None:
        self.total += n
        if self.total > MAX_DECODED_BYTES:
            raise DecodeLimitError(f"decoded body exceeds {MAX_DECODED_BYTES} bytes")


class ZlibDecoder:
    """gzip and deflate (zlib-wrapped, or raw deflate as some servers send)."""

    __slots__ = ("_budget", "_obj", "_raw_fallback", "_started")

    def __init__(self, encoding: str) -> None:
        # 32+15 auto-detects gzip or zlib headers; raw deflate is tried if the first bytes fail.
        self._obj = zlib.decompressobj(47 if encoding == "gzip" else 15)
        self._raw_fallback = encoding == "deflate"
        self._started = False
        self._budget = _Budget()

    def decode(self, chunk: bytes) -> bytes:
        """Decode the next encoded chunk."""
        if not chunk:
            return b""
        try:
            out = self._run(chunk)
        except zlib.error:
            if not (self._raw_fallback and not self._started):
                raise
            self._obj = zlib.decompressobj(-15)
            out = self._run(chunk)
        self._started = True
        return out

    def _run(self, data: bytes) -> bytes:
        pieces: list[bytes] = []
        while data:
            piece = self._obj.decompress(data, MAX_PIECE)
            self._budget.spend(len(piece))
            pieces.append(piece)
            data = self._obj.unconsumed_tail
        return b"".join(pieces)

    def flush(self) -> bytes:
        """Return what zlib still holds."""
        return self._obj.flush()


class BrotliDecoder:
    """br."""

    __slots__ = ("_budget", "_obj")

    def __init__(self) -> None:
        self._obj = brotli.Decompressor()
        self._budget = _Budget()

    def decode(self, chunk: bytes) -> bytes:
        """Decode the next encoded chunk."""
        if not chunk:
            return b""
        piece: bytes = self._obj.process(chunk, output_buffer_limit=MAX_PIECE)
        self._budget.spend(len(piece))
        pieces = [piece]
        while not self._obj.can_accept_more_data():
            piece = self._obj.process(b"", output_buffer_limit=MAX_PIECE)
            self._budget.spend(len(piece))
            pieces.append(piece)
        return b"".join(pieces)

    def flush(self) -> bytes:
        """Brotli emits everything it can on each call."""
        return b""


class ZstdDecoder:
    """zstd (possibly several concatenated frames)."""

    __slots__ = ("_budget", "_obj")

    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._budget = _Budget()

    def decode(self, chunk: bytes) -> bytes:
        """Decode the next encoded chunk."""
        if not chunk:
            return b""
        out: bytes = self._obj.decompress(chunk)
        self._budget.spend(len(out))
        return out

    def flush(self) -> bytes:
        """zstd emits everything it can on each call."""
        return b""


def make_decoder(content_encoding: str | None) -> Decoder:
    """Decoder for a Content-Encoding header value; unknown encodings raise ValueError."""
    if not content_encoding:
        return IdentityDecoder()
    encoding = content_encoding.strip().lower()
    if "," in encoding:
        # Stacked encodings are legal but nobody serving LLM APIs uses them.
        raise ValueError(f"unsupported stacked content-encoding {encoding!r}")
    if encoding in ("identity", ""):
        return IdentityDecoder()
    if encoding in ("gzip", "x-gzip"):
        return ZlibDecoder("gzip")
    if encoding == "deflate":
        return ZlibDecoder("deflate")
    if encoding == "br":
        return BrotliDecoder()
    if encoding == "zstd":
        return ZstdDecoder()
    raise ValueError(f"unsupported content-encoding {encoding!r}")
