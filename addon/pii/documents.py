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
from functools import lru_cache
from typing import Any, Final

import msgspec

from addon.pii.engine import Finding, Match, encode, scan_bytes, scan_text

_decode: Final = msgspec.json.Decoder()
_HAS_DIGIT: Final = re.compile(r"[0-9]")
_MAX_DEPTH: Final = 4  # JSON text inside JSON strings, at most this deep
_SEPARATOR: Final = b"\n\x00"  # between segments scanned in one pass, as between leaves
_PART_SEPARATOR: Final = b"\n"  # between content parts of one message
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


def _leaves(doc: Any, tree: list[tuple[int, str | int]]) -> Iterator[tuple[str, str, int]]:
    """Every string and integer leaf of ``doc`` as ``(key, value, path node)``, in document
    order, lazily; ``tree`` receives the path tree (parent node, key or index; -1 is the root).

    A leaf's key is the nearest one above it (a list's items share their list's key). JSON text
    inside a string is decoded and walked too, up to ``_MAX_DEPTH`` deep.
    """
    stack: list[tuple[Any, int, str, int]] = [(doc, -1, "", 0)]
    pop, push = stack.pop, stack.append
    while stack:
        value, node, label, depth = pop()
        if type(value) is str:
            inner = decoded_json(value) if depth < _MAX_DEPTH and len(value) > 1 else None
            if inner is None:
                yield label, value, node
            else:
                push((inner, node, label, depth + 1))
        elif type(value) is dict:
            for key, item in reversed(value.items()):
                tree.append((node, key))
                push((item, len(tree) - 1, key, depth))
        elif type(value) is list:
            for i in range(len(value) - 1, -1, -1):
                tree.append((node, i))
                push((value[i], len(tree) - 1, label, depth))
        elif type(value) is int:
            yield label, str(value), node
        # floats, booleans, null: nothing a detector could match


class _Lines:
    """Leaves as ``key: value`` lines to scan in one pass, with each line's offset and node.

    A NUL ends each line: keyword look-behind stops there (``validators.keyword_before``), so one
    leaf's key never lends context to the next value.
    """

    __slots__ = ("lines", "nodes", "size", "starts", "tree")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.starts: list[int] = []
        self.nodes: list[int] = []
        self.tree: list[tuple[int, str | int]] = []
        self.size = 0

    def add(self, label: str, value: str, node: int) -> None:
        line = f"{label}: {value}\n\x00"
        self.lines.append(line)
        self.starts.append(self.size)
        self.nodes.append(node)
        self.size += len(line)


def _every_leaf(doc: Any) -> _Lines:
    lines = _Lines()
    for label, value, node in _leaves(doc, lines.tree):
        lines.add(label, value, node)
    return lines


def _leaves_holding(doc: Any, hints: list[str]) -> _Lines | None:
    """The leaves that hold ``hints`` (matched texts, in text order), or None when one is in no
    leaf (a value written with JSON escapes, or spanning two leaves).

    Leaves come in the order of the JSON text, so each hint is looked for from where the
    previous one was found, and the walk stops at the leaf holding the last one.
    """
    lines = _Lines()
    leaves = _leaves(doc, lines.tree)
    value, offset, kept = "", 0, True
    for text in hints:
        while (found := value.find(text, offset)) < 0:
            step = next(leaves, None)
            if step is None:
                return None
            label, value, node = step
            offset, kept = 0, False
        if not kept:
            lines.add(label, value, node)
            kept = True
        offset = found + len(text)
    return lines


def _path(root: str, tree: list[tuple[int, str | int]], node: int) -> str:
    chain: list[str | int] = []
    while node >= 0:
        node, step = tree[node]
        chain.append(step)
    path = root
    for step in reversed(chain):
        path = f"{path}[{step}]" if isinstance(step, int) else child_path(path, step)
    return path


def _scan_document(doc: Any, root: str, counts: _Counts, hints: list[str] | None = None) -> None:
    """Count ``doc``'s matches by leaf path. ``hints``, the values a scan of the document's text
    found, limit the scan to the leaves that hold them (each still scanned whole, key included,
    so that a leaf's own key is its context): what the text scan found is known to be there,
    only its paths are not."""
    lines = (_leaves_holding(doc, hints) if hints else None) or _every_leaf(doc)
    starts, nodes, tree = lines.starts, lines.nodes, lines.tree
    paths: dict[int, str] = {}
    for match in scan_text("".join(lines.lines)):  # str offsets, like the line starts
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


@lru_cache(maxsize=4096)
def _path_context(path: str) -> tuple[bytes, str | None]:
    """A segment's context from its path: ``b"key: "`` when the path ends in a word key (never a
    key with digits: it may be PII), and the list of content parts it belongs to, if any
    (``$.messages[0].content`` for ``$.messages[0].content[1].text``)."""
    quoted = path.endswith('"]')
    key = path[path.rfind('["') + 2 : -2] if quoted else path[path.rfind(".") + 1 :]
    usable = key[:1].isalpha() and not ("]" in key or "[" in key or "@" in key)
    prefix = key.encode() + b": " if usable and not _HAS_DIGIT.search(key) else b""
    stem = path.removesuffix(".text")
    open_at = stem.rfind("[")
    parts = stem.endswith("]") and open_at >= 0 and stem[open_at + 1 : -1].isdigit()
    return prefix, stem[:open_at] if parts else None


def scan_segments(segments: Iterable[tuple[str, str]]) -> list[Finding]:
    """Scan ``(json_path, text)`` pairs; one :class:`Finding` per (type, path), first seen first.

    A segment holding JSON text is reported at paths inside it (``...arguments.to``).
    """
    # One RE2 pass over every segment, NUL-separated (no detector crosses a NUL, and keyword
    # look-behind stops there): each call into RE2 costs ~1 µs however short its text, so a
    # body of many small strings costs a pass over its bytes instead of a call per string.
    # Each segment is preceded by its key ("ssn: 078051120" for MCP arguments, as in a
    # document's lines), and the parts of one message follow each other without a NUL
    # ("my SSN is" and "078051120" in two content parts are one sentence to the reader).
    paths: list[str] = []
    texts: list[str] = []
    starts: list[int] = []
    pieces: list[bytes] = []
    size = 0
    previous: str | None = None
    for path, text in segments:
        key, parent = _path_context(path)
        if pieces:
            separator = _PART_SEPARATOR if parent is not None and parent == previous else _SEPARATOR
            pieces.append(separator)
            size += len(separator)
        previous = parent
        buf = key + encode(text) if key else encode(text)
        paths.append(path)
        texts.append(text)
        starts.append(size)
        pieces.append(buf)
        size += len(buf)
    if not pieces:
        return []
    by_segment: dict[int, list[Match]] = {}
    joined = b"".join(pieces)
    for match in scan_bytes(joined):
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
            hints = [joined[m.start : m.end].decode("utf-8", "surrogatepass") for m in matches]
            _scan_document(doc, paths[i], counts, hints)
    return [Finding(type=kind, count=n, path=path) for (kind, path), n in counts.items()]


def scan_json(doc: Any, path: str = "$") -> list[Finding]:
    """Scan a decoded JSON document (strings, JSON inside strings, integers) in one pass."""
    counts: _Counts = {}
    _scan_document(doc, path, counts)
    return [Finding(type=kind, count=n, path=p) for (kind, p), n in counts.items()]
