"""Views shared by the request endpoints: content parts, tool definitions, the text they carry.

Declared fields only (msgspec skips the rest without building it); never ``forbid_unknown_fields``.
"""

from __future__ import annotations

import msgspec

from ..base import Segments


class Named(msgspec.Struct):
    name: str = ""


class FunctionCall(msgspec.Struct):
    name: str = ""
    arguments: str | None = None


class Part(msgspec.Struct):
    type: str = ""
    text: str | None = None


class ToolDef(msgspec.Struct):
    type: str = ""
    function: Named | None = None
    name: str | None = None  # Responses API tools are flat


#: Content part types that are text; any other part (image, audio, file) is media.
_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal", ""})


def media_parts(content: str | list[Part] | None) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if part.type not in _TEXT_PARTS)


def tool_names(tools: list[ToolDef] | None, functions: list[Named] | None = None) -> list[str]:
    names: list[str] = []
    for tool in tools or ():
        if tool.function is not None and tool.function.name:
            names.append(tool.function.name)
        elif tool.name:
            names.append(tool.name)
        elif tool.type:
            names.append(tool.type)  # built-in tools (web_search, file_search ...)
    names.extend(f.name for f in functions or () if f.name)
    return names


def content_segments(seg: Segments, base: str, content: str | list[Part] | None) -> None:
    if isinstance(content, str):
        seg.add(base, content)
    elif content:
        for j, part in enumerate(content):
            seg.add(f"{base}[{j}].text", part.text)
