"""Provider layer: detection, request/response parsing, incremental streams, encodings."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import brotli
import msgspec
import pytest
import zstandard

from addon.providers import base as base_mod
from addon.providers import detect, get_provider
from addon.providers.base import Provider, ResponseInfo, ToolCall, Usage, fill_prompt_estimate
from addon.providers.eventstream import EventStreamSplitter, encode_message
from addon.providers.framing import JSONArraySplitter, NDJSONSplitter
from addon.providers.sse import SSESplitter

DATA = Path(__file__).parent / "data" / "providers"
SSE = "text/event-stream; charset=utf-8"
JSON = "application/json"
EVENTSTREAM = "application/vnd.amazon.eventstream"
NDJSON = "application/x-ndjson"


def data(name: str) -> bytes:
    return (DATA / name).read_bytes()


def bedrock_stream() -> bytes:
    events = json.loads(data("bedrock_stream_events.json"))
    return b"".join(
        encode_message(
            {":event-type": name, ":content-type": "application/json", ":message-type": "event"},
            json.dumps(payload).encode(),
        )
        for name, payload in events
    )


def provider(name: str) -> Provider:
    p = get_provider(name)
    assert p is not None
    return p


def feed_chunks(parser_factory: Callable[[], object], body: bytes, size: int) -> ResponseInfo:
    parser = parser_factory()
    for i in range(0, len(body), size):
        parser.feed(body[i : i + size])  # type: ignore[attr-defined]
    parser.feed(b"")  # type: ignore[attr-defined]  # mitmproxy's end-of-stream call
    return parser.finish()  # type: ignore[attr-defined,no-any-return]


# ---- detection -----------------------------------------------------------------------------

DETECT_CASES = [
    ("api.openai.com", "/v1/chat/completions", "openai", "chat.completions"),
    ("api.openai.com:443", "/v1/chat/completions?foo=1", "openai", "chat.completions"),
    ("API.OPENAI.COM", "/v1/responses", "openai", "responses"),
    ("api.openai.com", "/v1/embeddings", "openai", "embeddings"),
    ("api.openai.com", "/v1/completions", "openai", "completions"),
    ("api.openai.com", "/v1/models", None, None),
    ("api.openai.com", "/v1/responses/resp_123", None, None),
    ("api.openai.com", "/v1/chat/completions/chatcmpl-1", None, None),
    (
        "myres.openai.azure.com",
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21",
        "azure",
        "chat.completions",
    ),
    (
        "myres.cognitiveservices.azure.com",
        "/openai/deployments/emb/embeddings?api-version=2024-02-01",
        "azure",
        "embeddings",
    ),
    ("myres.openai.azure.com", "/openai/v1/responses", "azure", "responses"),
    ("myres.openai.azure.com", "/openai/v1/chat/completions", "azure", "chat.completions"),
    ("myres.openai.azure.com", "/v1/chat/completions", None, None),
    ("evil-openai.azure.com.attacker.net", "/openai/v1/chat/completions", None, None),
    ("api.anthropic.com", "/v1/messages", "anthropic", "messages"),
    ("api.anthropic.com", "/v1/messages?beta=true", "anthropic", "messages"),
    ("api.anthropic.com", "/v1/messages/count_tokens", None, None),
    ("api.anthropic.com", "/v1/messages/batches", None, None),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-1.5-pro:generateContent",
        "gemini",
        "generateContent",
    ),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        "gemini",
        "streamGenerateContent",
    ),
    (
        "generativelanguage.googleapis.com",
        "/v1/models/gemini-1.5-flash:streamGenerateContent",
        "gemini",
        "streamGenerateContent",
    ),
    ("generativelanguage.googleapis.com", "/v1beta/models/gemini-1.5-pro:countTokens", None, None),
    ("generativelanguage.googleapis.com", "/v1beta/models", None, None),
    (
        "us-central1-aiplatform.googleapis.com",
        "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-1.5-pro:generateContent",
        "vertex",
        "generateContent",
    ),
    (
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        "bedrock",
        "converse",
    ),
    (
        "bedrock-runtime.eu-west-3.amazonaws.com",
        "/model/us.anthropic.claude-3-5-sonnet-20241022-v2:0/converse-stream",
        "bedrock",
        "converse-stream",
    ),
    ("bedrock-runtime.us-east-1.amazonaws.com", "/model/x/invoke", None, None),
    ("bedrock.us-east-1.amazonaws.com", "/model/x/converse", None, None),
    ("localhost:11434", "/api/chat", "ollama", "ollama.chat"),
    ("127.0.0.1", "/api/generate", "ollama", "ollama.generate"),
    ("gpu-box.internal", "/api/chat", "ollama", "ollama.chat"),
    ("localhost:11434", "/api/tags", None, None),
    ("api.mistral.ai", "/v1/chat/completions", "mistral", "chat.completions"),
    ("api.mistral.ai", "/v1/fim/completions", "mistral", "completions"),
    ("api.groq.com", "/openai/v1/chat/completions", "groq", "chat.completions"),
    ("api.deepseek.com", "/chat/completions", "deepseek", "chat.completions"),
    ("openrouter.ai", "/api/v1/chat/completions", "openrouter", "chat.completions"),
    ("api.x.ai", "/v1/chat/completions", "xai", "chat.completions"),
    ("api.together.xyz", "/v1/chat/completions", "together", "chat.completions"),
    ("api.fireworks.ai", "/inference/v1/chat/completions", "fireworks", "chat.completions"),
    ("example.com", "/v1/chat/completions", None, None),
    ("example.com", "/", None, None),
    ("www.google.com", "/search", None, None),
]


@pytest.mark.parametrize(("host", "path", "name", "endpoint"), DETECT_CASES)
def test_detect(host: str, path: str, name: str | None, endpoint: str | None) -> None:
    found = detect(host, path)
    if name is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0].name, found[1]) == (name, endpoint)


@pytest.mark.parametrize(
    ("host", "path", "extras", "name", "endpoint"),
    [
        (
            "vllm.internal",
            "/v1/chat/completions",
            {"vllm.internal"},
            "openai-compatible",
            "chat.completions",
        ),
        (
            "vllm.internal:8000",
            "/v1/completions",
            {"vllm.internal:8000"},
            "openai-compatible",
            "completions",
        ),
        (
            "vllm.internal:8000",
            "/v1/embeddings",
            {"vllm.internal"},
            "openai-compatible",
            "embeddings",
        ),
        (
            "vllm.internal",
            "/v1/chat/completions",
            {"vllm.internal": "vllm"},
            "vllm",
            "chat.completions",
        ),
        ("vllm.internal", "/v1/models", {"vllm.internal"}, None, None),
        ("other.internal", "/v1/chat/completions", {"vllm.internal"}, None, None),
        # A built-in host keeps its own provider even when listed again.
        (
            "api.openai.com",
            "/v1/chat/completions",
            {"api.openai.com": "mine"},
            "openai",
            "chat.completions",
        ),
    ],
)
def test_detect_extra_hosts(
    host: str, path: str, extras: object, name: str | None, endpoint: str | None
) -> None:
    found = detect(host, path, extras)  # type: ignore[arg-type]
    if name is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0].name, found[1]) == (name, endpoint)


# ---- requests ------------------------------------------------------------------------------

REQUEST_CASES = [
    # provider, endpoint, path, file, model, stream, tools, max_tokens, expected (path, text) subset
    (
        "openai",
        "chat.completions",
        "/v1/chat/completions",
        "openai_chat_request.json",
        "gpt-4o-2024-08-06",
        True,
        ["get_weather", "send_email"],
        512,
        [
            ("$.messages[0].content", "You are a helpful travel assistant."),
            (
                "$.messages[1].content[0].text",
                "What's the weather in Paris? Email me at jane.doe@example.com",
            ),
            ("$.messages[2].tool_calls[0].function.arguments", '{"city":"Paris","unit":"celsius"}'),
            ("$.messages[3].content", '{"temp": 18, "conditions": "cloudy"}'),
        ],
    ),
    (
        "openai",
        "responses",
        "/v1/responses",
        "openai_responses_request.json",
        "o4-mini",
        True,
        ["lookup_ticket", "web_search_preview"],
        800,
        [
            ("$.instructions", "Answer briefly."),
            ("$.input[0].content[0].text", "Summarise the ticket from 555-0100."),
            ("$.input[1].arguments", '{"id":42}'),
            ("$.input[2].output", '{"title":"Printer on fire"}'),
        ],
    ),
    (
        "openai",
        "embeddings",
        "/v1/embeddings",
        "openai_embeddings_request.json",
        "text-embedding-3-small",
        False,
        [],
        None,
        [("$.input[0]", "The food was delicious"), ("$.input[1]", "Call me at +1 415 555 0100")],
    ),
    (
        "openai",
        "completions",
        "/v1/completions",
        "openai_completions_request.json",
        "gpt-3.5-turbo-instruct",
        False,
        [],
        7,
        [("$.prompt", "Say this is a test")],
    ),
    (
        "anthropic",
        "messages",
        "/v1/messages",
        "anthropic_request.json",
        "claude-3-5-sonnet-20241022",
        True,
        ["get_order", "web_search"],
        1024,
        [
            ("$.system[0].text", "You are a support agent for ACME."),
            ("$.messages[0].content", "My SSN is on file; can you check order 1234?"),
            ("$.messages[1].content[0].text", "Let me look that up."),
            ("$.messages[1].content[1].input", '{"order_id": "1234"}'),
            ("$.messages[2].content[0].content[0].text", "Order 1234: shipped to 10 Main St"),
            ("$.messages[2].content[2].text", "Thanks! Anything else?"),
        ],
    ),
    (
        "gemini",
        "streamGenerateContent",
        "/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse",
        "gemini_request.json",
        "gemini-1.5-pro",
        True,
        ["find_invoice", "pay_invoice"],
        800,
        [
            ("$.systemInstruction.parts[0].text", "You are a cat. Your name is Neko."),
            ("$.contents[0].parts[0].text", "Hello there, my IBAN is on the invoice."),
            ("$.contents[1].parts[0].functionCall.args", '{"customer": "ACME", "year": 2024}'),
            ("$.contents[2].parts[0].functionResponse.response", '{"total": 99.5}'),
        ],
    ),
    (
        "bedrock",
        "converse",
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        "bedrock_request.json",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        False,
        ["get_weather"],
        2048,
        [
            ("$.system[0].text", "You are a weather bot."),
            ("$.messages[0].content[0].text", "Find the weather for my home at 10 Main St."),
            ("$.messages[1].content[0].toolUse.input", '{"address": "10 Main St"}'),
            ("$.messages[2].content[0].toolResult.content[0].json", '{"temp": 21}'),
            ("$.messages[2].content[0].toolResult.content[1].text", "sunny"),
        ],
    ),
    (
        "ollama",
        "ollama.chat",
        "/api/chat",
        "ollama_chat_request.json",
        "llama3.2",
        True,
        ["lookup"],
        128,  # Ollama streams unless "stream": false
        [
            ("$.messages[1].content", "why is the sky blue? my email is bob@example.org"),
            ("$.messages[2].tool_calls[0].function.arguments", '{"topic": "rayleigh"}'),
            ("$.messages[3].content", "Rayleigh scattering"),
        ],
    ),
    (
        "ollama",
        "ollama.generate",
        "/api/generate",
        "ollama_generate_request.json",
        "llama3.2",
        False,
        [],
        None,
        [("$.system", "Be brief."), ("$.prompt", "Why is the sky blue?")],
    ),
]


@pytest.mark.parametrize(
    ("name", "endpoint", "path", "file", "model", "stream", "tools", "max_tokens", "segments"),
    REQUEST_CASES,
)
def test_parse_request(
    name: str,
    endpoint: str,
    path: str,
    file: str,
    model: str,
    stream: bool,
    tools: list[str],
    max_tokens: int | None,
    segments: list[tuple[str, str]],
) -> None:
    info = provider(name).parse_request(endpoint, path, data(file))
    assert info.parse_error is None
    assert (info.provider, info.endpoint) == (name, endpoint)
    assert info.model == model
    assert info.stream is stream
    assert info.tools == tools
    assert info.max_tokens == max_tokens
    for seg in segments:
        assert seg in info.text
    chars = sum(len(t) for _, t in info.text)
    assert info.estimated_prompt_tokens == (chars + 3) // 4 > 0


def test_request_text_never_includes_images() -> None:
    info = provider("anthropic").parse_request(
        "messages", "/v1/messages", data("anthropic_request.json")
    )
    assert not any("iVBOR" in text for _, text in info.text)
    info = provider("gemini").parse_request(
        "generateContent", "/v1beta/models/m:generateContent", data("gemini_request.json")
    )
    assert not any("/9j/" in text for _, text in info.text)


def test_azure_model_from_deployment_or_body() -> None:
    azure = provider("azure")
    path = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    body = b'{"messages":[{"role":"user","content":"hi"}]}'
    assert azure.parse_request("chat.completions", path, body).model == "gpt4o-prod"
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    assert azure.parse_request("chat.completions", path, body).model == "gpt-4o"


def test_gemini_snake_case_request() -> None:
    body = (
        b'{"system_instruction":{"parts":[{"text":"sys"}]},"contents":[{"parts":[{"text":"hi"}]}],'
        b'"generation_config":{"max_output_tokens":5},"tools":[{"function_declarations":[{"name":"f"}]}]}'
    )
    info = provider("gemini").parse_request(
        "generateContent", "/v1beta/models/gemini-2.0-flash:generateContent", body
    )
    assert info.text == [
        ("$.system_instruction.parts[0].text", "sys"),
        ("$.contents[0].parts[0].text", "hi"),
    ]
    assert (info.max_tokens, info.tools, info.model, info.stream) == (
        5,
        ["f"],
        "gemini-2.0-flash",
        False,
    )


@pytest.mark.parametrize(
    ("name", "endpoint", "path"),
    [
        ("openai", "chat.completions", "/v1/chat/completions"),
        ("openai", "responses", "/v1/responses"),
        ("openai", "embeddings", "/v1/embeddings"),
        ("anthropic", "messages", "/v1/messages"),
        ("gemini", "generateContent", "/v1beta/models/gemini-1.5-pro:generateContent"),
        ("bedrock", "converse-stream", "/model/amazon.nova-pro-v1%3A0/converse-stream"),
        ("ollama", "ollama.chat", "/api/chat"),
    ],
)
@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b'{"messages": "nope", "contents": 3, "model": 5}', b"[1,2]"],
)
def test_malformed_request(name: str, endpoint: str, path: str, body: bytes) -> None:
    info = provider(name).parse_request(endpoint, path, body)
    assert info.parse_error
    assert (info.provider, info.endpoint) == (name, endpoint)


def test_gemini_and_bedrock_keep_path_model_on_bad_body() -> None:
    info = provider("gemini").parse_request(
        "streamGenerateContent", "/v1beta/models/gemini-1.5-pro:streamGenerateContent", b"{"
    )
    assert (info.model, info.stream, info.parse_error is not None) == ("gemini-1.5-pro", True, True)
    info = provider("bedrock").parse_request(
        "converse", "/model/amazon.nova-pro-v1%3A0/converse", b"{"
    )
    assert (info.model, info.parse_error is not None) == ("amazon.nova-pro-v1:0", True)


# ---- buffered responses ----------------------------------------------------------------------

RESPONSE_CASES = [
    # provider, endpoint, file, model, usage, text, tool calls, finish
    (
        "openai",
        "chat.completions",
        "openai_chat_response.json",
        "gpt-4o-2024-08-06",
        Usage(1234, 56, 1290, cached_tokens=1024, reasoning_tokens=0, source="reported"),
        "It is 18°C and cloudy in Paris right now.",
        [ToolCall("send_email", '{"to":"jane.doe@example.com"}', "call_def456")],
        "tool_calls",
    ),
    (
        "openai",
        "responses",
        "openai_responses_response.json",
        "o4-mini-2025-04-16",
        Usage(328, 52, 380, cached_tokens=128, reasoning_tokens=32, source="reported"),
        "The printer is on fire.",
        [ToolCall("lookup_ticket", '{"id":43}', "call_2")],
        "completed",
    ),
    (
        "openai",
        "embeddings",
        "openai_embeddings_response.json",
        "text-embedding-3-small",
        Usage(14, 0, 14, source="reported"),
        "",
        [],
        None,
    ),
    (
        "openai",
        "completions",
        "openai_completions_response.json",
        "gpt-3.5-turbo-instruct",
        Usage(5, 7, 12, source="reported"),
        "\n\nThis is indeed a test",
        [],
        "length",
    ),
    (
        "anthropic",
        "messages",
        "anthropic_response.json",
        "claude-3-5-sonnet-20241022",
        # input 50 + cache write 1000 + cache read 2000
        Usage(3050, 120, 3170, cached_tokens=2000, cache_write_tokens=1000, source="reported"),
        "Your order shipped yesterday.",
        [ToolCall("get_order", '{"order_id": "5678", "verbose": true}')],
        "tool_use",
    ),
    (
        "gemini",
        "generateContent",
        "gemini_response.json",
        "gemini-2.5-flash",
        # candidates 40 + thoughts 200
        Usage(1500, 240, 1740, cached_tokens=1024, reasoning_tokens=200, source="reported"),
        "Meow! The invoice total is 99.50.",
        [ToolCall("pay_invoice", '{"amount": 99.5}')],
        "STOP",
    ),
    (
        "gemini",
        "streamGenerateContent",
        "gemini_stream.json",
        "gemini-1.5-pro-002",
        Usage(9, 21, 30, cached_tokens=4, source="reported"),
        'Meow, I am Neko — the "café" cat {🐱} \\ [ok]. Purr.',
        [ToolCall("feed_cat", '{"food": "tuna", "grams": 50}')],
        "STOP",
    ),
    (
        "bedrock",
        "converse",
        "bedrock_response.json",
        None,
        Usage(1530, 25, 1555, cached_tokens=1000, cache_write_tokens=500, source="reported"),
        "It is sunny and 21 degrees.",
        [ToolCall("get_weather", '{"address": "12 Elm St"}', "tooluse_2")],
        "tool_use",
    ),
    (
        "ollama",
        "ollama.generate",
        "ollama_generate_response.json",
        "llama3.2",
        Usage(26, 290, 316, source="reported"),
        "The sky is blue because of Rayleigh scattering.",
        [],
        "stop",
    ),
]


@pytest.mark.parametrize(
    ("name", "endpoint", "file", "model", "usage", "text", "calls", "finish"), RESPONSE_CASES
)
def test_parse_response(
    name: str,
    endpoint: str,
    file: str,
    model: str | None,
    usage: Usage,
    text: str,
    calls: list[ToolCall],
    finish: str | None,
) -> None:
    info = provider(name).parse_response(endpoint, data(file), JSON)
    assert info.parse_error is None
    assert info.model == model
    assert info.usage == usage
    assert info.text == text
    assert info.tool_calls == calls
    assert info.finish_reason == finish


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("openai", "chat.completions"),
        ("openai", "responses"),
        ("openai", "embeddings"),
        ("anthropic", "messages"),
        ("gemini", "generateContent"),
        ("bedrock", "converse"),
        ("ollama", "ollama.chat"),
    ],
)
@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"choices": 5, "content": 1, "candidates": {}, "output": 3, "usage": []}']
)
def test_malformed_response(name: str, endpoint: str, body: bytes) -> None:
    info = provider(name).parse_response(endpoint, body, JSON)
    assert info.parse_error
    assert info.usage.source == "missing"


def test_error_body_records_type_not_message() -> None:
    info = provider("openai").parse_response(
        "chat.completions", data("openai_error_response.json"), JSON
    )
    assert info.error == "invalid_api_key"
    assert info.parse_error is None
    assert "sk-" not in msgspec.json.encode(info).decode()


def test_response_without_usage_is_estimated() -> None:
    body = (
        b'{"model":"m","choices":[{"message":{"content":"'
        + b"x" * 40
        + b'"},"finish_reason":"stop"}]}'
    )
    info = provider("openai").parse_response("chat.completions", body, JSON)
    assert info.usage == Usage(completion_tokens=10, source="estimated")
    assert fill_prompt_estimate(info.usage, 7) == Usage(7, 10, 17, source="estimated")
    empty = provider("openai").parse_response("chat.completions", b'{"choices":[]}', JSON)
    assert empty.usage.source == "missing"


# ---- streams ---------------------------------------------------------------------------------

STREAM_CASES: dict[str, tuple[str, str, str, Callable[[], bytes], ResponseInfo]] = {
    "openai-chat": (
        "openai",
        "chat.completions",
        SSE,
        lambda: data("openai_chat_stream.sse"),
        ResponseInfo(
            model="gpt-4o-2024-08-06",
            usage=Usage(1234, 42, 1276, cached_tokens=1024, reasoning_tokens=0, source="reported"),
            text="Il fait 18 °C à Paris — nuageux ☁️.",
            tool_calls=[
                ToolCall("send_email", '{"to":"jane.doe@example.com"}', "call_x1"),
                ToolCall("get_weather", '{"city":"Lyon"}', "call_x2"),
            ],
            finish_reason="tool_calls",
        ),
    ),
    "openai-responses": (
        "openai",
        "responses",
        SSE,
        lambda: data("openai_responses_stream.sse"),
        ResponseInfo(
            model="o4-mini-2025-04-16",
            usage=Usage(328, 52, 380, cached_tokens=128, reasoning_tokens=32, source="reported"),
            text="The printer is on fire 🔥.",
            tool_calls=[ToolCall("lookup_ticket", '{"id":43}', "call_2")],
            finish_reason="completed",
        ),
    ),
    "anthropic": (
        "anthropic",
        "messages",
        SSE,
        lambda: data("anthropic_stream.sse"),
        ResponseInfo(
            model="claude-3-5-sonnet-20241022",
            usage=Usage(
                2620, 89, 2709, cached_tokens=2048, cache_write_tokens=100, source="reported"
            ),
            text="Okay, let me check the weather in Zürich for you — one moment ⏳.",
            tool_calls=[
                ToolCall(
                    "get_weather", '{"location": "Zürich, CH"}', "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
                )
            ],
            finish_reason="tool_use",
        ),
    ),
    "gemini-sse": (
        "gemini",
        "streamGenerateContent",
        SSE,
        lambda: data("gemini_stream.sse"),
        ResponseInfo(
            model="gemini-1.5-pro-002",
            usage=Usage(9, 21, 30, cached_tokens=4, source="reported"),
            text="Meow, I am Neko — the café's cat 🐱. Purr.",
            finish_reason="STOP",
        ),
    ),
    "gemini-array": (
        "gemini",
        "streamGenerateContent",
        "application/json; charset=UTF-8",
        lambda: data("gemini_stream.json"),
        ResponseInfo(
            model="gemini-1.5-pro-002",
            usage=Usage(9, 21, 30, cached_tokens=4, source="reported"),
            text='Meow, I am Neko — the "café" cat {🐱} \\ [ok]. Purr.',
            tool_calls=[ToolCall("feed_cat", '{"food": "tuna", "grams": 50}')],
            finish_reason="STOP",
        ),
    ),
    "bedrock": (
        "bedrock",
        "converse-stream",
        EVENTSTREAM,
        bedrock_stream,
        ResponseInfo(
            usage=Usage(530, 25, 555, cached_tokens=500, source="reported"),
            text="It is sunny in Zürich ☀️.",
            tool_calls=[ToolCall("get_weather", '{"address": "12 Elm St"}', "tooluse_9")],
            finish_reason="tool_use",
        ),
    ),
    "ollama": (
        "ollama",
        "ollama.chat",
        NDJSON,
        lambda: data("ollama_chat_stream.ndjson"),
        ResponseInfo(
            model="llama3.2",
            usage=Usage(26, 282, 308, source="reported"),
            text="Rayleigh scattering — ça marche 🌈.",
            tool_calls=[ToolCall("lookup", '{"topic":"sky"}')],
            finish_reason="stop",
        ),
    ),
}
CHUNK_SIZES = [*range(1, 65), 97, 251, 1024, 10**9]


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_stream_every_chunk_size(case: str) -> None:
    name, endpoint, ctype, body_fn, expected = STREAM_CASES[case]
    p = provider(name)
    body = body_fn()
    for size in CHUNK_SIZES:
        got = feed_chunks(lambda: p.stream_parser(endpoint, ctype, None), body, size)
        assert got == expected, f"chunk size {size}"


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_buffered_stream_body_parses_the_same(case: str) -> None:
    """A streamed body that was buffered anyway (stream not switched on) gives the same result."""
    name, endpoint, ctype, body_fn, expected = STREAM_CASES[case]
    assert provider(name).parse_response(endpoint, body_fn(), ctype) == expected


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_text_delta_callback_sees_all_text(case: str) -> None:
    name, endpoint, ctype, body_fn, expected = STREAM_CASES[case]
    deltas: list[str] = []
    parser = provider(name).stream_parser(endpoint, ctype, None)
    parser.text_delta_callback = deltas.append
    body = body_fn()
    for i in range(0, len(body), 7):
        parser.feed(body[i : i + 7])
    parser.finish()
    assert "".join(deltas) == expected.text
    assert len(deltas) > 1  # delivered incrementally, not once at the end


def test_callback_failure_does_not_break_parsing() -> None:
    def boom(_: str) -> None:
        raise RuntimeError("observer bug")

    parser = provider("anthropic").stream_parser("messages", SSE, None)
    parser.text_delta_callback = boom
    parser.feed(data("anthropic_stream.sse"))
    assert parser.finish() == STREAM_CASES["anthropic"][4]


def _cut_before(body: bytes, marker: bytes) -> bytes:
    idx = body.index(marker)
    assert idx > 0
    return body[:idx]


TRUNCATION_CASES = [
    # case, cut point marker, expected usage after the cut
    (
        "openai-chat",
        b"data: [DONE]",
        Usage(1234, 42, 1276, cached_tokens=1024, reasoning_tokens=0, source="reported"),
    ),
    # Cut before the usage chunk: nothing reported, the completion is estimated from what was seen.
    (
        "openai-chat",
        b'data: {"id":"chatcmpl-AbC124","object":"chat.completion.chunk","created":1731600001,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_50cad350e4","choices":[],"usage"',
        None,
    ),
    ("openai-responses", b"event: response.completed", None),
    # Prompt counts from message_start survive; output is estimated since message_delta never came.
    ("anthropic", b"event: message_delta", "anthropic-partial"),
    (
        "anthropic",
        b"event: message_stop",
        Usage(2620, 89, 2709, cached_tokens=2048, cache_write_tokens=100, source="reported"),
    ),
    ("gemini-array", b"\n]\n", Usage(9, 21, 30, cached_tokens=4, source="reported")),
    ("ollama", b'{"model":"llama3.2","created_at":"2025-01-01T00:00:00.200Z"', None),
]


@pytest.mark.parametrize(("case", "marker", "usage"), TRUNCATION_CASES)
def test_truncated_stream(case: str, marker: bytes, usage: Usage | str | None) -> None:
    name, endpoint, ctype, body_fn, _ = STREAM_CASES[case]
    body = _cut_before(body_fn(), marker)
    parser = provider(name).stream_parser(endpoint, ctype, None)
    parser.feed(body)
    info = parser.finish()
    assert info.parse_error is not None and "truncated" in info.parse_error
    assert info.text  # what was seen is kept
    if usage == "anthropic-partial":
        assert info.usage.prompt_tokens == 2620 and info.usage.cached_tokens == 2048
        assert info.usage.source == "estimated" and info.usage.completion_tokens
    elif usage is None:
        assert info.usage.source == "estimated"
        assert (
            info.usage.completion_tokens
            == (len(info.text) + sum(len(c.arguments) for c in info.tool_calls) + 3) // 4
        )
    else:
        assert info.usage == usage


def test_truncated_mid_event_and_mid_frame() -> None:
    body = data("anthropic_stream.sse")
    parser = provider("anthropic").stream_parser("messages", SSE, None)
    parser.feed(body[: body.index(b'"output_tokens":89') + 5])
    info = parser.finish()
    assert info.parse_error
    assert info.usage.prompt_tokens == 2620
    stream = bedrock_stream()
    parser = provider("bedrock").stream_parser("converse-stream", EVENTSTREAM, None)
    parser.feed(stream[:-10])
    info = parser.finish()
    assert info.parse_error and "truncated" in info.parse_error
    assert info.text == "It is sunny in Zürich ☀️."
    assert info.finish_reason == "tool_use"


def test_finish_is_idempotent() -> None:
    parser = provider("openai").stream_parser("chat.completions", SSE, None)
    parser.feed(data("openai_chat_stream.sse"))
    assert parser.finish() is parser.finish()


def test_bad_event_does_not_hide_later_usage() -> None:
    body = b'data: {"choices": 7}\n\n' + data("openai_chat_stream.sse")
    parser = provider("openai").stream_parser("chat.completions", SSE, None)
    parser.feed(body)
    info = parser.finish()
    assert info.parse_error and "ValidationError" in info.parse_error
    assert info.usage.prompt_tokens == 1234


def test_anthropic_stream_error_event() -> None:
    parser = provider("anthropic").stream_parser("messages", SSE, None)
    parser.feed(data("anthropic_error_stream.sse"))
    info = parser.finish()
    assert info.error == "overloaded_error"
    assert info.parse_error is None
    assert info.usage.prompt_tokens == 12


def test_bedrock_exception_frame() -> None:
    frame = encode_message(
        {
            ":message-type": "exception",
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
        },
        b'{"message":"Too many requests"}',
    )
    parser = provider("bedrock").stream_parser("converse-stream", EVENTSTREAM, None)
    parser.feed(frame)
    info = parser.finish()
    assert info.error == "throttlingException" and info.parse_error is None


def test_non_sse_body_on_stream_endpoint_is_parsed_whole() -> None:
    """Upstream answered a stream request with a JSON error: the stream parser copes."""
    parser = provider("openai").stream_parser("chat.completions", "application/json", None)
    body = data("openai_error_response.json")
    parser.feed(body[:10])
    parser.feed(body[10:])
    info = parser.finish()
    assert info.error == "invalid_api_key" and info.parse_error is None


# ---- content-encoding --------------------------------------------------------------------------


def _deflate(raw: bytes) -> bytes:
    return zlib.compress(raw)


def _raw_deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(raw) + c.flush()


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": _deflate,
    "br": brotli.compress,
    "zstd": lambda raw: zstandard.ZstdCompressor().compress(raw),
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("case", ["openai-chat", "anthropic", "bedrock", "gemini-array", "ollama"])
def test_encoded_streams(encoding: str, case: str) -> None:
    name, endpoint, ctype, body_fn, expected = STREAM_CASES[case]
    encoded = ENCODINGS[encoding](body_fn())
    p = provider(name)
    for size in (1, 3, 64, 10**9):
        got = feed_chunks(lambda: p.stream_parser(endpoint, ctype, encoding.upper()), encoded, size)
        assert got == expected, f"{encoding} chunk size {size}"


def test_raw_deflate_is_accepted() -> None:
    name, endpoint, ctype, body_fn, expected = STREAM_CASES["openai-chat"]
    got = feed_chunks(
        lambda: provider(name).stream_parser(endpoint, ctype, "deflate"), _raw_deflate(body_fn()), 5
    )
    assert got == expected


def test_corrupt_or_unknown_encoding_reports() -> None:
    parser = provider("openai").stream_parser("chat.completions", SSE, "gzip")
    parser.feed(b"definitely not gzip")
    assert parser.finish().parse_error
    parser = provider("openai").stream_parser("chat.completions", SSE, "compress")
    parser.feed(data("openai_chat_stream.sse"))
    info = parser.finish()
    assert info.parse_error and "compress" in info.parse_error


# ---- stream_options injection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "endpoint", "body", "expected"),
    [
        ("openai", "chat.completions", {"model": "m", "stream": True}, {"include_usage": True}),
        ("openai", "completions", {"model": "m", "stream": True}, {"include_usage": True}),
        (
            "openai",
            "chat.completions",
            {"stream": True, "stream_options": {"x": 1}},
            {"x": 1, "include_usage": True},
        ),
        ("azure", "chat.completions", {"stream": True}, {"include_usage": True}),
        ("groq", "chat.completions", {"stream": True}, {"include_usage": True}),
        (
            "openai",
            "chat.completions",
            {"stream": True, "stream_options": {"include_usage": True}},
            None,
        ),
        (
            "openai",
            "chat.completions",
            {"stream": True, "stream_options": {"include_usage": False}},
            None,
        ),
        ("openai", "chat.completions", {"stream": False}, None),
        ("openai", "chat.completions", {"model": "m"}, None),
        ("openai", "responses", {"stream": True}, None),
        ("openai", "embeddings", {"stream": True}, None),
        ("mistral", "chat.completions", {"stream": True}, None),  # rejects unknown fields
        ("anthropic", "messages", {"stream": True}, None),
    ],
)
def test_inject_stream_usage(
    name: str, endpoint: str, body: dict[str, object], expected: dict[str, object] | None
) -> None:
    raw = json.dumps({**body, "messages": [{"role": "user", "content": "héllo"}]}).encode()
    out = provider(name).inject_stream_usage(endpoint, raw)
    if expected is None:
        assert out is None
    else:
        assert out is not None
        doc = json.loads(out)
        assert doc["stream_options"] == expected
        assert doc["messages"] == [{"role": "user", "content": "héllo"}]


def test_inject_stream_usage_ignores_bad_json() -> None:
    assert provider("openai").inject_stream_usage("chat.completions", b"{oops") is None
    assert provider("openai").inject_stream_usage("chat.completions", b"[1]") is None


# ---- framers ------------------------------------------------------------------------------------


def _sse_all(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    s = SSESplitter()
    out: list[tuple[str, bytes]] = []
    for c in chunks:
        out.extend(s.feed(c))
    out.extend(s.finish())
    return out


@pytest.mark.parametrize(
    ("raw", "events"),
    [
        (b"data: a\n\n", [("message", b"a")]),
        (b"data: a\r\n\r\ndata: b\r\r", [("message", b"a"), ("message", b"b")]),
        (b": keepalive\n\nevent: ping\ndata: {}\n\n", [("ping", b"{}")]),
        (b"data: line1\ndata: line2\ndata:line3\n\n", [("message", b"line1\nline2\nline3")]),
        (b"data: a\r\ndata: b\r\n\r\n", [("message", b"a\nb")]),
        (b"id: 7\nretry: 100\nevent: x\ndata: 1\nunknown: z\n\n", [("x", b"1")]),
        (b"event: lonely\n\n", []),  # no data: nothing dispatched
        (b"data: tail-without-blank-line", [("message", b"tail-without-blank-line")]),
        ("data: é☁️\n\n".encode(), [("message", "é☁️".encode())]),
    ],
)
def test_sse_splitter_any_boundary(raw: bytes, events: list[tuple[str, bytes]]) -> None:
    assert _sse_all([raw]) == events
    for size in range(1, len(raw) + 1):
        assert _sse_all([raw[i : i + size] for i in range(0, len(raw), size)]) == events
    # Every two-piece split, including \r | \n across chunks.
    for cut in range(len(raw) + 1):
        assert _sse_all([raw[:cut], raw[cut:]]) == events


def test_sse_splitter_caps_line_length(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("addon.providers.sse.MAX_FRAME_BYTES", 100)
    s = SSESplitter()
    for _ in range(10):
        s.feed(b"x" * 50)
    assert s.error is not None
    assert s.feed(b"\n\ndata: a\n\n") == []


def test_json_array_splitter_escapes_across_boundaries() -> None:
    elements = [b'{"a": "x\\\\"}', b'{"b": "q\\"}{["}', b'{"c": [1, {"d": "]"}]}']
    raw = b"[" + b",\r\n".join(elements) + b"]"
    for size in range(1, len(raw) + 1):
        s = JSONArraySplitter()
        got: list[bytes] = []
        for i in range(0, len(raw), size):
            got.extend(p for _, p in s.feed(raw[i : i + size]))
        assert got == elements, size
        assert s.closed and not s.pending
        assert [json.loads(e) for e in got]


def test_ndjson_splitter() -> None:
    s = NDJSONSplitter()
    assert s.feed(b'{"a":1}\n\n{"b"') == [("message", b'{"a":1}')]
    assert s.pending
    assert s.finish() == [("message", b'{"b"')]


def test_eventstream_crc_mismatch_stops() -> None:
    frame = bytearray(encode_message({":event-type": "metadata", ":message-type": "event"}, b"{}"))
    frame[-1] ^= 0xFF
    s = EventStreamSplitter()
    assert s.feed(bytes(frame)) == []
    assert s.error is not None and "CRC" in s.error
    frame = bytearray(encode_message({":event-type": "metadata"}, b"{}"))
    frame[2] ^= 0x01  # total length: prelude CRC no longer matches
    s = EventStreamSplitter()
    s.feed(bytes(frame))
    assert s.error is not None and "prelude" in s.error


def test_eventstream_header_types() -> None:
    """Non-string headers (as AWS sends, e.g. timestamps) are skipped, not misread."""
    import struct

    raw_headers = (
        b"\x0b:event-type\x07"
        + struct.pack(">H", 8)
        + b"metadata"
        + b"\x04flag\x00"
        + b"\x03num\x04"
        + struct.pack(">i", 7)
        + b"\x02ts\x08"
        + struct.pack(">q", 1)
        + b"\x04uuid\x09"
        + b"0" * 16
        + b"\x03raw\x06"
        + struct.pack(">H", 3)
        + b"abc"
    )
    payload = b'{"usage":{"inputTokens":1,"outputTokens":2}}'
    total = 16 + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    frame = body + struct.pack(">I", zlib.crc32(body))
    assert EventStreamSplitter().feed(frame) == [("metadata", payload)]


# ---- memory caps ------------------------------------------------------------------------------------


def test_text_is_capped_but_usage_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_mod, "MAX_TEXT_CHARS", 10)
    seen: list[str] = []
    parser = provider("anthropic").stream_parser("messages", SSE, None)
    parser.text_delta_callback = seen.append
    parser.feed(data("anthropic_stream.sse"))
    info = parser.finish()
    assert info.text == "Okay, let "
    assert info.text_truncated
    assert "".join(seen).startswith("Okay, let me check")  # the scanner still sees everything
    assert info.usage.completion_tokens == 89


def test_tool_arguments_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_mod, "MAX_TOOL_ARGUMENT_CHARS", 5)
    parser = provider("openai").stream_parser("chat.completions", SSE, None)
    parser.feed(data("openai_chat_stream.sse"))
    info = parser.finish()
    assert [c.arguments for c in info.tool_calls] == ['{"to"', '{"cit']
    assert info.text_truncated


@pytest.mark.parametrize(
    ("name", "path", "endpoint"),
    [
        ("openai", "/v1/chat/completions", "chat.completions"),
        ("azure", "/openai/deployments/d/embeddings?api-version=1", "embeddings"),
        ("anthropic", "/v1/messages", "messages"),
        ("anthropic", "/v1/complete", None),
        ("gemini", "/v1beta/models/gemini-1.5-pro:streamGenerateContent", "streamGenerateContent"),
        ("bedrock", "/model/amazon.nova-lite-v1:0/converse", "converse"),
        ("ollama", "/api/generate", "ollama.generate"),
        ("my-vllm", "/v1/completions", "completions"),
    ],
)
def test_detect_as_ignores_host(name: str, path: str, endpoint: str | None) -> None:
    """Traffic routed to a provider by configuration (upstream override, reverse mode)."""
    from addon.providers import detect_as

    found = detect_as(name, path)
    if endpoint is None:
        assert found is None
    else:
        assert found is not None and (found[0].name, found[1]) == (name, endpoint)
