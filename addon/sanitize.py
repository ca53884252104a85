"""Text PostgreSQL can store, whatever an agent sent (DESIGN.md §4: "Every call is recorded").

PostgreSQL refuses a NUL in ``text`` and ``\\u0000`` in ``jsonb``, and a lone surrogate (a str
that is not valid Unicode, e.g. ``"\\ud800"``) cannot even be encoded to UTF-8. Either would send
the whole event to the dead-letter file, so an agent could remove its own calls from the audit
trail by putting one in a model name or a tool name. :func:`sanitize` escapes them instead, in
every text column and in every string of the JSON columns (keys too), before the event is chained:
the lineage hash covers exactly what is stored.

The escape is visible and exact: in a string that needs it, NUL and surrogates become ``\\uXXXX``
(six characters, lower-case hex) and a backslash becomes ``\\\\``, so :func:`restore` gives the
original back; strings that need nothing are never touched. The event's ``sanitized`` column names
each changed field by its path (``model``, ``tool_calls[0].name``, ``pii_types[1]``) with the
original UTF-8 byte length (surrogates counted as three bytes) of the value (``bytes``) or of the
JSON key (``key_bytes``). The original values are kept nowhere.

Pure code, on the recorder's path for every event: a clean event costs one C-level JSON encoding
of its text and JSON columns and one substring search.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import msgspec

from addon.event import COLUMNS, PG_TYPES, Event

#: Columns sanitize() looks at: every text, text[] and jsonb one but the hashes (set after it, hex)
#: and its own output.
SCANNED: tuple[str, ...] = tuple(
    name
    for name, pg in zip(COLUMNS, PG_TYPES, strict=True)
    if pg in ("text", "text[]", "jsonb") and name not in ("prev_hash", "lineage_hash", "sanitized")
)
_pick = operator.itemgetter(*(COLUMNS.index(name) for name in SCANNED))
_astuple = msgspec.structs.astuple
_json = msgspec.json.Encoder()
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_ESCAPED = re.compile("[\\\\\x00\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:(\\)|u([0-9a-f]{4}))")


def storable(s: str) -> bool:
    """True when PostgreSQL takes ``s`` as it is (no NUL, no surrogate)."""
    if s.isascii():
        return "\x00" not in s
    return _UNSTORABLE.search(s) is None


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return "\\\\" if c == "\\" else f"\\u{ord(c):04x}"


def escape(s: str) -> str:
    """``s`` with NUL and surrogates as ``\\uXXXX`` and backslashes doubled (see :func:`restore`)."""
    return _ESCAPED.sub(_escape_one, s)


def _restore_one(m: re.Match[str]) -> str:
    return "\\" if m.group(1) else chr(int(m.group(2), 16))


def restore(s: str) -> str:
    """The original of a string :func:`escape` produced (one that ``sanitized`` names)."""
    return _ESCAPE.sub(_restore_one, s)


def utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _clean(event: Event) -> bool:
    """The fast path: no string in any scanned column holds a NUL or a surrogate."""
    try:
        encoded = _json.encode(_pick(_astuple(event)))
    except (ValueError, TypeError):  # UnicodeEncodeError: a surrogate somewhere
        return False
    # JSON writes NUL as \u0000; a literal backslash-u0000 in the text is a false alarm, which
    # the slow path then finds clean.
    return b"\\u0000" not in encoded


def sanitize(event: Event) -> Event:
    """``event`` with every text made storable, the changes noted in ``sanitized`` (in place)."""
    if not _clean(event):
        _apply(event)
    return event


def sanitized_copy(event: Event) -> Event | None:
    """A sanitised copy of ``event``, or None when it needs no change (the writer's last resort)."""
    if _clean(event):
        return None
    copy = msgspec.structs.replace(event)  # shallow: _apply replaces, never mutates, containers
    return copy if _apply(copy) else None


def _apply(event: Event) -> bool:
    changes: dict[str, dict[str, int]] = {}
    for name in SCANNED:
        value = getattr(event, name)
        if value is not None:
            new = _value(value, name, changes)
            if new is not value:
                setattr(event, name, new)
    if changes:
        event.sanitized = {**(event.sanitized or {}), **changes}
    return bool(changes)


def _value(v: Any, path: str, changes: dict[str, dict[str, int]]) -> Any:
    """``v`` made storable: the same object when nothing in it changed, a new one otherwise."""
    if isinstance(v, str):
        if storable(v):
            return v
        changes.setdefault(path, {})["bytes"] = utf8_len(v)
        return escape(v)
    if isinstance(v, list):
        items = [_value(item, f"{path}[{i}]", changes) for i, item in enumerate(v)]
        return items if any(a is not b for a, b in zip(items, v, strict=True)) else v
    if isinstance(v, dict):
        return _dict(v, path, changes)
    return v


def _dict(d: dict[Any, Any], path: str, changes: dict[str, dict[str, int]]) -> dict[Any, Any]:
    bad = {k for k in d if isinstance(k, str) and not storable(k)}
    renamed: dict[str, str] = {}
    if bad:
        taken = {k for k in d if k not in bad}
        for k in d:
            if k in bad:
                new_key = escape(k)
                while new_key in taken:  # a literal key that looks escaped: keep both members
                    new_key += "_"
                taken.add(new_key)
                renamed[k] = new_key
    items: list[tuple[Any, Any]] = []
    changed = bool(renamed)
    for k, item in d.items():
        key = renamed.get(k, k)
        child = _child(path, key) if isinstance(key, str) else f"{path}[{key!r}]"
        if key is not k:
            changes.setdefault(child, {})["key_bytes"] = utf8_len(k)
        new = _value(item, child, changes)
        changed = changed or new is not item
        items.append((key, new))
    return dict(items) if changed else d


def _child(path: str, key: str) -> str:
    # the JSON-path spelling of addon/pii.py: .name, or ["quoted"] when not an identifier
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{_json.encode(key).decode()}]"


__all__ = ["SCANNED", "escape", "restore", "sanitize", "sanitized_copy", "storable", "utf8_len"]
