"""The request shapes a labelled snippet is carried in, and the APIs they are sent to."""

from __future__ import annotations

import json
import random
from typing import Any

from .alphabets import ALNUM, _r
from .records import Item
from .vendors import VENDORS

SHAPES = (
    "text",
    "openai_user",
    "openai_parts",
    "openai_tool_args",
    "openai_tool_result",
    "anthropic_user",
    "anthropic_tool_use",
    "anthropic_tool_result",
    "mcp_tools_call",
)
# Which API each shape is sent to: the evaluator parses the body as the recorder would.
CARRIER = {
    "text": "text",
    "openai_user": "openai",
    "openai_parts": "openai",
    "openai_tool_args": "openai",
    "openai_tool_result": "openai",
    "anthropic_user": "anthropic",
    "anthropic_tool_use": "anthropic",
    "anthropic_tool_result": "anthropic",
    "mcp_tools_call": "mcp",
}


SYSTEM = "You are a careful support assistant. Answer briefly."


_FIELD_NAMES = {
    "email": "Email",
    "phone": "Phone",
    "ssn": "SSN",
    "credit_card": "Card number",
    "ipv4": "IP address",
    "ipv6": "IP address",
    "iban": "IBAN",
}


def _after_escape(item: Item, rng: random.Random) -> str:
    """The value right after a newline or a tab, as tool arguments carry form fields.

    The field name stays in front (``SSN:`` or ``AWS_SECRET_ACCESS_KEY:``, then the escape, then
    the value): a bare nine-digit number or 40-character string is no SSN or key to a reader.
    """
    if (
        item.source in ("faker", "secret")
        and sum(item.labels.values()) == 1
        and rng.random() < 0.67
    ):
        (kind,) = item.labels
        name = VENDORS[item.vendor][1] if item.vendor else _FIELD_NAMES[kind]
        return f"{name}:{rng.choice(('\n', '\t', '\n\n'))}{item.value}"
    return item.text


def carry(item: Item, shape: str, rng: random.Random, n: int) -> str:
    """``item`` wrapped as the body of a request of ``shape`` (exact bytes, as a str)."""
    if shape == "text":
        return item.text
    call_id = f"call_{_r(rng, ALNUM, 24)}"
    if shape.startswith("openai"):
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
        if shape == "openai_user":
            messages.append({"role": "user", "content": item.text})
        elif shape == "openai_parts":
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Here is the customer's message:"},
                        {"type": "text", "text": item.text},
                    ],
                }
            )
        else:
            args = {"ticket_id": n, "body": _after_escape(item, rng), "priority": "normal"}
            messages.append({"role": "user", "content": "File this as a ticket."})
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {
                                "name": "create_ticket",
                                "arguments": json.dumps(args)
                                if shape == "openai_tool_args"
                                else f'{{"ticket_id": {n}}}',
                            },
                        }
                    ],
                }
            )
            if shape == "openai_tool_args":
                result = "created"
            elif rng.random() < 0.5:  # tool results are often JSON text themselves
                result = json.dumps(
                    {"ticket_id": n, "status": "open", "body": _after_escape(item, rng)}
                )
            else:
                result = item.text
            messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        return json.dumps(
            {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.2}, ensure_ascii=False
        )
    if shape.startswith("anthropic"):
        tool_id = f"toolu_{_r(rng, ALNUM, 24)}"
        amessages: list[dict[str, Any]] = []
        if shape == "anthropic_user":
            content: Any = (
                item.text if rng.random() < 0.5 else [{"type": "text", "text": item.text}]
            )
            amessages.append({"role": "user", "content": content})
        else:
            use_input: dict[str, Any] = {"ticket_id": n}
            if shape == "anthropic_tool_use":
                use_input = {"ticket_id": n, "body": _after_escape(item, rng)}
            amessages.append({"role": "user", "content": "File this as a ticket."})
            amessages.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Filing it now."},
                        {
                            "type": "tool_use",
                            "id": tool_id,
                            "name": "create_ticket",
                            "input": use_input,
                        },
                    ],
                }
            )
            if shape == "anthropic_tool_use":
                result_content: Any = "created"
            elif rng.random() < 0.5:
                result_content = item.text
            else:
                result_content = [{"type": "text", "text": _after_escape(item, rng)}]
            amessages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": tool_id, "content": result_content},
                    ],
                }
            )
        return json.dumps(
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": SYSTEM,
                "messages": amessages,
            },
            ensure_ascii=False,
        )
    assert shape == "mcp_tools_call"
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": n,
            "method": "tools/call",
            "params": {
                "name": "crm_update_contact",
                "arguments": {
                    "contact_id": n,
                    "note": _after_escape(item, rng),
                    "tags": ["support"],
                },
            },
        },
        ensure_ascii=False,
    )
