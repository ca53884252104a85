"""Redaction: every validated match replaced by ``[REDACTED:<type>]``, never logged or kept."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from addon.pii.documents import decoded_json
from addon.pii.engine import encode, scan_bytes

_encode_json: Final = msgspec.json.Encoder()


def redact_text(text: str) -> tuple[str, int]:
    """Replace every validated match with ``[REDACTED:<type>]``; returns (text, matches)."""
    buf = encode(text)
    matches = scan_bytes(buf)
    if not matches:
        return text, 0
    parts: list[bytes] = []
    last = 0
    for kind, start, end in matches:
        parts.append(buf[last:start])
        parts.append(b"[REDACTED:" + kind.encode() + b"]")
        last = end
    parts.append(buf[last:])
    return b"".join(parts).decode("utf-8", "surrogatepass"), len(matches)


def _redact_string(text: str, depth: int) -> tuple[str, int]:
    """A string; JSON text inside it (tool arguments) is redacted as JSON and stays valid JSON."""
    if depth < 4:
        doc = decoded_json(text)
        if doc is not None:
            redacted, n = _redact(doc, depth + 1)
            return (_encode_json.encode(redacted).decode(), n) if n else (text, 0)
    return redact_text(text)


def _redact(obj: Any, depth: int) -> tuple[Any, int]:
    if isinstance(obj, str):
        return _redact_string(obj, depth)
    if isinstance(obj, dict):
        total = 0
        new_dict: dict[Any, Any] = {}
        for key, value in obj.items():
            new_dict[key], n = _redact(value, depth)
            total += n
        return (new_dict, total) if total else (obj, 0)
    if isinstance(obj, list):
        total = 0
        new_list: list[Any] = []
        for value in obj:
            redacted, n = _redact(value, depth)
            new_list.append(redacted)
            total += n
        return (new_list, total) if total else (obj, 0)
    return obj, 0


def redact_json(obj: Any) -> tuple[Any, int]:
    """Redact every string value in a decoded JSON document (keys are left alone).

    Returns a new document and the number of redactions; unchanged subtrees are shared with the
    input rather than copied, and the input is never modified. Strings holding JSON are redacted
    inside and re-encoded (compact), so tool arguments stay parseable.
    """
    return _redact(obj, 0)
