"""Scanning JSON: segments with their paths, and JSON text inside strings (tool arguments).

Providers hand the scanner ``(json_path, text)`` segments of a decoded body; tool arguments,
tool results and MCP params are often JSON text themselves, where a value after ``\\n`` is glued
to the ``n``. :func:`scan_segments` scans each segment as it is, escapes blanked out
(``engine.unescaped``), and a segment that holds JSON and has a match is decoded and scanned as a
document, so that each finding names the path inside the decoded value.

A document is scanned in one RE2 pass too: its leaves are concatenated as ``key: value`` lines
(the key gives bare numbers their context, as in ``phone: 4155552671``) with an offset table;
a path is spelt only for a leaf that has a match.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgspec

from addon.pii.engine import Finding, Match, encode, scan_bytes, scan_text

_decode: Final = msgspec.json.Decoder()
_HAS_DIGIT: Final = re.compile(r"[0-9]")
_MAX_DEPTH: Final = 4  # JSON text inside JSON strings, at most this deep
_SEPARATOR: Final = b"\n\x00"  # between segments scanned in one pass, as between leaves
_Counts = dict[tuple[str, str], int]


def child_path(path: str, key: str) -> str:
    """``path.key``, or ``path["key"]`` when the key is not an identifier.

    A key that is itself PII (``{"jane@example.com": ...}``) becomes ``[*]``: findings never
    carry a value, not even in their path. Only keys with a digit or an '@' can be one.
    """
    if (_HAS_DIGIT.search(key) or "@" in key) and scan_text(key):
        return f"{path}[*]"
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{msgspec.json.encode(key).decode()}]"


def json_segments(obj: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """Every string value in a decoded JSON document with its JSON path, for :func:`scan_segments`.

    Paths look like ``$.messages[0].content``; keys that are not identifiers are quoted
    (``$["x-key"]``).
    """
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from json_segments(value, child_path(path, str(key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from json_segments(value, f"{path}[{i}]")


def decoded_json(text: str) -> Any:
    """The object or array ``text`` holds, or None when it holds none."""
    head = text[:1]
    if head != "{" and head != "[":
        if not head.isspace():
            return None
        head = text.lstrip()[:1]
        if head != "{" and head != "[":
            return None
    try:
        doc = _decode.decode(text)
    except (msgspec.DecodeError, UnicodeEncodeError):
        return None
    return doc if isinstance(doc, dict | list) else None


def _walk(doc: Any) -> tuple[list[str], list[int], list[int], list[tuple[int, str | int]]]:
    """Every string and integer leaf of ``doc`` as a ``key: value`` line.

    Returns the lines, each line's start offset and path node, and the path tree (parent node,
    key or index; -1 is the root). A NUL ends each line: keyword look-behind stops there
    (``validators.keyword_before``), so one leaf's key never lends context to the next value.
    """
    lines: list[str] = []
    starts: list[int] = []
    nodes: list[int] = []
    tree: list[tuple[int, str | int]] = []
    size = 0
    stack: list[tuple[Any, int, str, int]] = [(doc, -1, "", 0)]
    pop, push = stack.pop, stack.append
    while stack:
        value, node, label, depth = pop()
        if type(value) is str:
            inner = decoded_json(value) if depth < _MAX_DEPTH and len(value) > 1 else None
            if inner is not None:
                push((inner, node, label, depth + 1))
                continue
        elif type(value) is dict:
            for key, item in reversed(value.items()):
                tree.append((node, key))
                push((item, len(tree) - 1, key, depth))
            continue
        elif type(value) is list:
            for i in range(len(value) - 1, -1, -1):
                tree.append((node, i))
                push((value[i], len(tree) - 1, label, depth))
            continue
        elif type(value) is int:
            value = str(value)
        else:
            continue  # floats, booleans, null: nothing a detector could match
        line = f"{label}: {value}\n\x00"
        lines.append(line)
        starts.append(size)
        nodes.append(node)
        size += len(line)
    return lines, starts, nodes, tree


def _path(root: str, tree: list[tuple[int, str | int]], node: int) -> str:
    chain: list[str | int] = []
    while node >= 0:
        node, step = tree[node]
        chain.append(step)
    path = root
    for step in reversed(chain):
        path = f"{path}[{step}]" if isinstance(step, int) else child_path(path, step)
    return path


def _scan_document(doc: Any, root: str, counts: _Counts) -> None:
    lines, starts, nodes, tree = _walk(doc)
    paths: dict[int, str] = {}
    for match in scan_text("".join(lines)):  # str offsets, like the line starts
        leaf = bisect_right(starts, match.start) - 1
        path = paths.get(leaf)
        if path is None:
            path = paths[leaf] = _path(root, tree, nodes[leaf])
        key = (match.type, path)
        counts[key] = counts.get(key, 0) + 1


def _count(counts: _Counts, path: str, matches: list[Match]) -> None:
    for match in matches:
        key = (match.type, path)
        counts[key] = counts.get(key, 0) + 1


def scan_segments(segments: Iterable[tuple[str, str]]) -> list[Finding]:
    """Scan ``(json_path, text)`` pairs; one :class:`Finding` per (type, path), first seen first.

    A segment holding JSON text is reported at paths inside it (``...arguments.to``).
    """
    paths: list[str] = []
    bufs: list[bytes] = []
    texts: list[str] = []
    for path, text in segments:
        paths.append(path)
        texts.append(text)
        bufs.append(encode(text))
    if not bufs:
        return []
    # One RE2 pass over every segment, NUL-separated (no detector crosses a NUL, and keyword
    # look-behind stops there): each call into RE2 costs ~1 µs however short its text, so a
    # body of many small strings costs a pass over its bytes instead of a call per string.
    starts: list[int] = []
    size = 0
    for buf in bufs:
        starts.append(size)
        size += len(buf) + len(_SEPARATOR)
    by_segment: dict[int, list[Match]] = {}
    for match in scan_bytes(_SEPARATOR.join(bufs)):
        i = bisect_right(starts, match.start) - 1
        by_segment.setdefault(i, []).append(match)
    counts: _Counts = {}
    for i, matches in by_segment.items():
        # Only a segment with a match is looked at again: JSON text is decoded, walked and
        # scanned as a document for its paths; anything else counts as it is.
        doc = decoded_json(texts[i])
        if doc is None:
            _count(counts, paths[i], matches)
        else:
            _scan_document(doc, paths[i], counts)
    return [Finding(type=kind, count=n, path=path) for (kind, path), n in counts.items()]


def scan_json(doc: Any, path: str = "$") -> list[Finding]:
    """Scan a decoded JSON document (strings, JSON inside strings, integers) in one pass."""
    counts: _Counts = {}
    _scan_document(doc, path, counts)
    return [Finding(type=kind, count=n, path=p) for (kind, p), n in counts.items()]
