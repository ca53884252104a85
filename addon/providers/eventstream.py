"""Incremental parser of the AWS event stream framing (``application/vnd.amazon.eventstream``).

A message is: prelude (total length u32, headers length u32, prelude CRC32), headers, payload,
message CRC32 — all big-endian. Headers are (name length u8, name, type u8, value). Bedrock's
``converse-stream`` puts the event name in ``:event-type`` and the event's JSON in the payload;
``:message-type`` is "exception" (with ``:exception-type``) for errors.
"""

from __future__ import annotations

import struct
import zlib

from .base import MAX_FRAME_BYTES
from .sse import Event

_PRELUDE = struct.Struct(">III")
_U16 = struct.Struct(">H")
# Fixed value sizes of the non-string header types (0/1 are bool true/false, no value).
_FIXED_SIZES = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
_MIN_MESSAGE = 16  # prelude (12) + message CRC (4)


class EventStreamError(ValueError):
    """A frame that cannot be trusted (bad CRC, length or header)."""


def parse_headers(data: bytes) -> dict[str, str]:
    """String headers of one message (other types are skipped: nobody needs them here)."""
    headers: dict[str, str] = {}
    pos, end = 0, len(data)
    while pos < end:
        name_len = data[pos]
        pos += 1
        name = data[pos : pos + name_len].decode("utf-8", "replace")
        pos += name_len
        if pos >= end:
            raise EventStreamError("truncated header")
        kind = data[pos]
        pos += 1
        if kind in (6, 7):  # bytes / string: u16 length + value
            (size,) = _U16.unpack_from(data, pos)
            pos += 2
            if kind == 7:
                headers[name] = data[pos : pos + size].decode("utf-8", "replace")
            pos += size
        elif kind in _FIXED_SIZES:
            pos += _FIXED_SIZES[kind]
        else:
            raise EventStreamError(f"unknown header type {kind}")
        if pos > end:
            raise EventStreamError("truncated header")
    return headers


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """Build one message (string headers only); for tests and test doubles."""
    raw_headers = b"".join(
        bytes([len(k.encode())]) + k.encode() + b"\x07" + _U16.pack(len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    total = _MIN_MESSAGE + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


class EventStreamSplitter:
    """Turns arbitrary byte chunks into ``(event name, JSON payload)`` pairs.

    Exceptions are returned with the name ``"exception:<type>"``. A CRC or length error stops the
    splitter (``error`` is set): after a corrupt frame nothing later can be found reliably.
    """

    __slots__ = ("_buf", "error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: str | None = None

    @property
    def pending(self) -> bool:
        """True when part of a message is held."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes; return the messages they completed."""
        if self.error is not None or not data:
            return []
        buf = self._buf
        buf += data
        out: list[Event] = []
        pos = 0
        try:
            while len(buf) - pos >= _MIN_MESSAGE:
                total, headers_len, prelude_crc = _PRELUDE.unpack_from(buf, pos)
                if zlib.crc32(buf[pos : pos + 8]) != prelude_crc:
                    raise EventStreamError("prelude CRC mismatch")
                if total < _MIN_MESSAGE + headers_len or total > MAX_FRAME_BYTES:
                    raise EventStreamError(f"bad message length {total}")
                if len(buf) - pos < total:
                    break
                end = pos + total
                (message_crc,) = struct.unpack_from(">I", buf, end - 4)
                if zlib.crc32(buf[pos : end - 4]) != message_crc:
                    raise EventStreamError("message CRC mismatch")
                headers = parse_headers(bytes(buf[pos + 12 : pos + 12 + headers_len]))
                payload = bytes(buf[pos + 12 + headers_len : end - 4])
                pos = end
                kind = headers.get(":message-type", "event")
                if kind == "event":
                    out.append((headers.get(":event-type", ""), payload))
                else:
                    name = headers.get(":exception-type") or headers.get(":error-code") or kind
                    out.append((f"exception:{name}", payload))
        except (EventStreamError, struct.error, IndexError) as exc:
            self.error = f"eventstream: {exc}"
            self._buf = bytearray()
            return out
        del buf[:pos]
        return out

    def finish(self) -> list[Event]:
        """End of stream: an incomplete message is dropped (``pending`` tells the caller)."""
        return []
