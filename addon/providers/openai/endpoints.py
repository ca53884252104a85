"""The endpoints of the OpenAI dialect, told apart by the path's suffix (any prefix)."""

from __future__ import annotations

CHAT = "chat.completions"
RESPONSES = "responses"
EMBEDDINGS = "embeddings"
COMPLETIONS = "completions"


def openai_endpoint(path: str) -> str | None:
    """Endpoint of an OpenAI-style path, by suffix (any prefix: /v1, /openai/v1 ...)."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return CHAT
    if path.endswith("/completions"):
        return COMPLETIONS
    if path.endswith("/embeddings"):
        return EMBEDDINGS
    if path.endswith("/responses"):
        return RESPONSES
    return None


def is_event_stream(content_type: str) -> bool:
    """True for ``text/event-stream`` (any parameters)."""
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
