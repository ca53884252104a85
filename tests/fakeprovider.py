"""A fake LLM provider on loopback: OpenAI, Anthropic and Gemini shapes, streaming and not.

A small ASGI app served by uvicorn in a background thread. Behaviour is chosen per request with
headers, so one server serves every test:

- ``x-fake-chunks`` (default 5) and ``x-fake-delay-ms`` (default 0): stream shape and pacing.
- ``x-fake-mode``: ``malformed`` (invalid JSON body), ``truncated`` (stream cut before the end),
  ``gzip`` / ``br`` (content-encoded body), ``huge`` (a 10 MB text body), ``error`` (429 JSON).
- ``x-fake-usage: PROMPT,COMPLETION``: the token counts a buffered OpenAI answer reports (a test
  that knows the real tokenizer's count of its prompt sends it; default 42 and 7).

Every streamed chunk's send time (``time.time()``) is kept in ``sent[request_id]`` so a test can
compare it with the time the client received it; ``requests`` keeps what arrived (headers, body).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import brotli
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

WORDS = [
    "Hello",
    " from",
    " the",
    " fake",
    " provider",
    ".",
    " Contact",
    " me",
    " at",
    " jane.doe@example.com",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeProvider:
    def __init__(self) -> None:
        self.port = free_port()
        self.sent: dict[str, list[float]] = {}
        self.requests: list[dict[str, Any]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake provider did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)

    # -- ASGI -----------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path: str = scope["path"]
        rid = headers.get("x-fake-id") or f"r{len(self.requests)}"
        self.requests.append(
            {
                "path": path,
                "headers": headers,
                "body": body,
                "query": scope["query_string"].decode(),
            }
        )
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        mode = headers.get("x-fake-mode", "")
        chunks = int(headers.get("x-fake-chunks", "5"))
        delay = int(headers.get("x-fake-delay-ms", "0")) / 1000
        model = payload.get("model") or path.split("/models/")[-1].split(":")[0] or "unknown"

        if mode == "error":
            await _respond(
                send, 429, b'{"error":{"type":"rate_limit_error","message":"slow down"}}'
            )
            return
        if mode == "huge":
            text = "x" * (10 * 1024 * 1024)
            await _respond(send, 200, json.dumps(_openai_full(model, text)).encode())
            return
        if mode == "malformed":
            await _respond(send, 200, b'{"id": "chatcmpl-1", "choices": [ {"message": ')
            return

        if path.endswith("/chat/completions") and mode == "tools":
            full = _openai_full(model, "")
            full["choices"][0]["message"] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "drop_database",
                            "arguments": json.dumps({"database": "prod-customers"}),
                        },
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": json.dumps({"city": "Oslo"}),
                        },
                    },
                ],
            }
            full["choices"][0]["finish_reason"] = "tool_calls"
            await _respond(send, 200, json.dumps(full).encode())
        elif path.endswith("/chat/completions"):
            if payload.get("stream"):
                include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
                await self._stream(
                    send, rid, _openai_sse(model, chunks, include_usage), delay, mode
                )
            else:
                usage = (
                    [int(x) for x in headers["x-fake-usage"].split(",")]
                    if "x-fake-usage" in headers
                    else None
                )
                await _respond(
                    send,
                    200,
                    json.dumps(_openai_full(model, "".join(WORDS[:chunks]), usage)).encode(),
                    mode,
                )
        elif path.endswith("/messages"):
            if payload.get("stream"):
                await self._stream(send, rid, _anthropic_sse(model, chunks), delay, mode)
            else:
                await _respond(send, 200, json.dumps(_anthropic_full(model, chunks)).encode(), mode)
        elif ":streamGenerateContent" in path:
            await self._stream(send, rid, _gemini_sse(chunks), delay, mode)
        elif ":generateContent" in path:
            await _respond(send, 200, json.dumps(_gemini_full(chunks)).encode(), mode)
        elif path == "/mcp":
            await _respond(
                send,
                200,
                json.dumps(
                    {"jsonrpc": "2.0", "id": payload.get("id"), "result": {"content": []}}
                ).encode(),
            )
        else:
            await _respond(send, 404, b'{"error":"not found"}')

    async def _stream(
        self, send: Send, rid: str, events: list[bytes], delay: float, mode: str
    ) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        if mode in ("gzip", "br"):
            headers.append((b"content-encoding", mode.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        times = self.sent.setdefault(rid, [])
        if mode == "truncated":
            events = events[: max(1, len(events) // 2)]
        compressor: Any = None
        if mode == "gzip":
            compressor = _GzipStream()
        elif mode == "br":
            compressor = brotli.Compressor()
        for i, ev in enumerate(events):
            if i and delay:
                await asyncio.sleep(delay)
            data = ev
            if compressor is not None:
                data = compressor.process(ev) + compressor.flush()
            times.append(time.time())
            await send({"type": "http.response.body", "body": data, "more_body": True})
        tail = b""
        if compressor is not None:
            tail = compressor.finish()
        await send({"type": "http.response.body", "body": tail, "more_body": False})


class _GzipStream:
    def __init__(self) -> None:
        import zlib

        self._c = zlib.compressobj(6, zlib.DEFLATED, 31)

    def process(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        import zlib

        return self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush()


async def _respond(send: Send, status: int, body: bytes, mode: str = "") -> None:
    headers = [(b"content-type", b"application/json")]
    if mode == "gzip":
        body = gzip.compress(body)
        headers.append((b"content-encoding", b"gzip"))
    elif mode == "br":
        body = brotli.compress(body)
        headers.append((b"content-encoding", b"br"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# -- payload shapes ---------------------------------------------------------------------------------

PROMPT_TOKENS = 42


def _openai_full(model: str, text: str, usage: list[int] | None = None) -> dict[str, Any]:
    prompt, completion = usage or (PROMPT_TOKENS, 7)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(obj) + "\n\n").encode()


def _openai_sse(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    out = []
    for i in range(chunks):
        delta: dict[str, Any] = {"content": WORDS[i % len(WORDS)]}
        if i == 0:
            delta["role"] = "assistant"
        out.append(
            _sse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
            )
        )
    out.append(
        _sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
    )
    if include_usage:
        out.append(
            _sse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": PROMPT_TOKENS,
                        "completion_tokens": chunks,
                        "total_tokens": PROMPT_TOKENS + chunks,
                    },
                }
            )
        )
    out.append(b"data: [DONE]\n\n")
    return out


def _anthropic_full(model: str, chunks: int) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(WORDS[:chunks])}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": PROMPT_TOKENS,
            "output_tokens": chunks,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }


def _anthropic_sse(model: str, chunks: int) -> list[bytes]:
    out = [
        _sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
                },
            },
            "message_start",
        ),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
    ]
    for i in range(chunks):
        out.append(
            _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": WORDS[i % len(WORDS)]},
                },
                "content_block_delta",
            )
        )
    out.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    out.append(
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": chunks},
            },
            "message_delta",
        )
    )
    out.append(_sse({"type": "message_stop"}, "message_stop"))
    return out


def _gemini_full(chunks: int) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "".join(WORDS[:chunks])}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": chunks,
            "totalTokenCount": PROMPT_TOKENS + chunks,
        },
        "modelVersion": "gemini-1.5-pro",
    }


def _gemini_sse(chunks: int) -> list[bytes]:
    out = []
    for i in range(chunks):
        ev: dict[str, Any] = {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": WORDS[i % len(WORDS)]}]}}
            ],
            "modelVersion": "gemini-1.5-pro",
        }
        if i == chunks - 1:
            ev["usageMetadata"] = {
                "promptTokenCount": PROMPT_TOKENS,
                "candidatesTokenCount": chunks,
                "totalTokenCount": PROMPT_TOKENS + chunks,
            }
        out.append(_sse(ev))
    return out
