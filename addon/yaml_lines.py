"""YAML documents whose values remember their line, and errors that say ``file:line: message``.

Shared by policy files (``addon/policy``) and scoring rule files (``api/scoring/rules.py``), so a
bad input is reported the same way wherever it is written. Pure: no I/O beyond the text given.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec
import yaml

__all__ = ["KeyPath", "Located", "SourceError", "dotted", "load", "msgspec_error"]

KeyPath = tuple[str | int, ...]
_MAX_NODES: Final = 200_000
_MAX_DEPTH: Final = 32


class SourceError(Exception):
    """A file that cannot be used; ``str()`` reads ``path:line: message``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class Located:
    """Plain Python values built from YAML nodes, remembering each value's 1-based line."""

    def __init__(self, source: str, error: type[SourceError] = SourceError) -> None:
        self.source = source
        self.lines: dict[KeyPath, int] = {}
        self.nodes = 0
        self._error = error

    def line_of(self, path: KeyPath) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: KeyPath, message: str) -> SourceError:
        """The caller's error class, at the line of ``path``."""
        return self._error(self.source, self.line_of(path), message)

    def build(self, loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath) -> object:
        line = node.start_mark.line + 1
        # YAML aliases can make a small file expand exponentially or refer to itself.
        self.nodes += 1
        if self.nodes > _MAX_NODES or len(path) > _MAX_DEPTH:
            raise self._error(
                self.source, line, "document too large or too deep (recursive YAML alias?)"
            )
        self.lines[path] = line
        if isinstance(node, yaml.MappingNode):
            out: dict[str, object] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                key_line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    raise self._error(self.source, key_line, f"key {key!r} is not a string")
                if key in out:
                    where = f" in {dotted(path)}" if path else ""
                    raise self._error(self.source, key_line, f"duplicate key {key!r}{where}")
                out[key] = self.build(loader, value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(loader, item, (*path, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node)


def load(text: str, source: str, error: type[SourceError] = SourceError) -> tuple[object, Located]:
    """Parse one YAML document into plain values (``None`` when empty) and their lines."""
    doc = Located(source, error)
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark is not None else None
            raise error(source, line, f"invalid YAML: {e.problem or e}") from None
        except yaml.YAMLError as e:
            raise error(source, None, f"invalid YAML: {e}") from None
        if root is None:  # empty file (or only comments)
            return None, doc
        try:
            return doc.build(loader, root, ()), doc
        except yaml.YAMLError as e:  # e.g. a bad timestamp scalar
            raise error(source, None, f"invalid YAML: {e}") from None
    finally:
        loader.dispose()


def dotted(path: KeyPath) -> str:
    """``rules[0].when[1]`` for ``("rules", 0, "when", 1)``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


_MSGSPEC_PATH = re.compile(r" - at `\$((?:\.[A-Za-z_]\w*|\[\d+\])*)`$")
_MSGSPEC_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def msgspec_error(err: msgspec.ValidationError, base: KeyPath = ()) -> tuple[KeyPath, str]:
    """msgspec's ``... - at `$.rules[0].when[1].op``` as (path under ``base``, problem)."""
    text = str(err)
    path: KeyPath = ()
    m = _MSGSPEC_PATH.search(text)
    if m:
        text = text[: m.start()]
        path = tuple(
            name if name else int(index) for name, index in _MSGSPEC_STEP.findall(m.group(1))
        )
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        text = f"unknown key `{unknown.group(1)}`"
        path = (*path, unknown.group(1))
    return (*base, *path), text
