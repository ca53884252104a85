"""Benchmark the provider layer and pricing (addon/providers, addon/pricing.py): µs per call.

Usage: .venv/bin/python scripts/bench_providers.py [--runs N]

Typical sizes: a 4 KB chat request (system prompt, a few turns, one tool call and result, two
tool definitions), a ~1 KB non-streamed response, and a streamed answer of 200 SSE chunks of one
event each (~250 bytes, as OpenAI/Anthropic send them). Prints the median over ``runs`` timing
rounds of a tight loop, as a table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from addon.pricing import cost_usd, reset_memo
from addon.providers import detect, get_provider
from addon.providers.base import Usage

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "providers"
PROSE = (
    "The team met on 2024-03-15 at 10:30 to discuss the Q2 roadmap and the hiring plan. "
    "We shipped version 2.4.1 of the SDK last week; latency dropped by 23% after the change. "
)


def chat_request(size: int = 4096) -> bytes:
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are a helpful assistant. " * 4},
    ]
    while len(json.dumps(messages)) < size - 900:
        messages.append({"role": "user", "content": PROSE * 2})
        messages.append({"role": "assistant", "content": PROSE})
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'})
    body = {
        "model": "gpt-4o",
        "messages": messages,
        "stream": True,
        "tools": [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in ("get_weather", "send_email")
        ],
    }
    return json.dumps(body).encode()


def anthropic_request(size: int = 4096) -> bytes:
    doc = json.loads(chat_request(size))
    msgs = [m for m in doc["messages"] if m["role"] in ("user", "assistant") and m["content"]]
    return json.dumps(
        {
            "model": "claude-3-5-sonnet-20241022",
            "max_tokens": 1024,
            "system": "You are a helpful assistant.",
            "messages": msgs,
            "stream": True,
        }
    ).encode()


def chat_stream(chunks: int = 200) -> list[bytes]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    out = []
    for i in range(chunks):
        event = {
            **head,
            "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}],
        }
        out.append(b"data: " + json.dumps(event).encode() + b"\n\n")
    usage = {"prompt_tokens": 1000, "completion_tokens": chunks, "total_tokens": 1000 + chunks}
    out.append(b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


def anthropic_stream(chunks: int = 200) -> list[bytes]:
    out = [
        b"event: message_start\ndata: "
        + json.dumps(
            {
                "type": "message_start",
                "message": {"model": "claude-3-5-sonnet-20241022", "usage": {"input_tokens": 900}},
            }
        ).encode()
        + b"\n\n"
    ]
    for i in range(chunks):
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": f"word{i} "},
        }
        out.append(b"event: content_block_delta\ndata: " + json.dumps(delta).encode() + b"\n\n")
    out.append(
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":200}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    return out


def bench(fn: Callable[[], object], runs: int, inner: int) -> float:
    """Median µs per call of ``fn`` over ``runs`` rounds of ``inner`` calls."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    runs = args.runs

    openai = get_provider("openai")
    anthropic = get_provider("anthropic")
    assert openai is not None and anthropic is not None
    req = chat_request()
    areq = anthropic_request()
    resp = (DATA / "openai_chat_response.json").read_bytes()
    aresp = (DATA / "anthropic_response.json").read_bytes()
    stream = chat_stream()
    astream = anthropic_stream()
    gz_stream = gzip.compress(b"".join(stream))
    gz_pieces = [gz_stream[i : i + 256] for i in range(0, len(gz_stream), 256)]
    usage = Usage(prompt_tokens=1234, completion_tokens=56, cached_tokens=1024)

    def run_openai_stream() -> None:
        p = openai.stream_parser("chat.completions", "text/event-stream", None)
        for piece in stream:
            p.feed(piece)
        p.finish()

    def run_anthropic_stream() -> None:
        p = anthropic.stream_parser("messages", "text/event-stream", None)
        for piece in astream:
            p.feed(piece)
        p.finish()

    def run_gzip_stream() -> None:
        p = openai.stream_parser("chat.completions", "text/event-stream", "gzip")
        for piece in gz_pieces:
            p.feed(piece)
        p.finish()

    reset_memo()
    rows = [
        (
            "detect (api.openai.com chat)",
            bench(lambda: detect("api.openai.com", "/v1/chat/completions"), runs, 20000),
        ),
        (
            "detect (azure deployment)",
            bench(
                lambda: detect(
                    "r.openai.azure.com", "/openai/deployments/d/chat/completions?api-version=1"
                ),
                runs,
                20000,
            ),
        ),
        (
            f"parse_request openai chat {len(req)} B",
            bench(
                lambda: openai.parse_request("chat.completions", "/v1/chat/completions", req),
                runs,
                2000,
            ),
        ),
        (
            f"parse_request anthropic {len(areq)} B",
            bench(lambda: anthropic.parse_request("messages", "/v1/messages", areq), runs, 2000),
        ),
        (
            f"inject_stream_usage {len(req)} B",
            bench(lambda: openai.inject_stream_usage("chat.completions", req), runs, 2000),
        ),
        (
            f"parse_response openai chat {len(resp)} B",
            bench(
                lambda: openai.parse_response("chat.completions", resp, "application/json"),
                runs,
                5000,
            ),
        ),
        (
            f"parse_response anthropic {len(aresp)} B",
            bench(
                lambda: anthropic.parse_response("messages", aresp, "application/json"), runs, 5000
            ),
        ),
        (f"openai stream {len(stream)} chunks (total)", bench(run_openai_stream, runs, 50)),
        (f"anthropic stream {len(astream)} chunks (total)", bench(run_anthropic_stream, runs, 50)),
        (f"openai stream gzip {len(gz_pieces)} pieces (total)", bench(run_gzip_stream, runs, 50)),
        (
            "cost_usd gpt-4o (memoised)",
            bench(lambda: cost_usd("openai", "gpt-4o", usage), runs, 20000),
        ),
        (
            "cost_usd claude-3-5-sonnet (memoised)",
            bench(lambda: cost_usd("anthropic", "claude-3-5-sonnet-20241022", usage), runs, 20000),
        ),
        (
            "cost_usd unknown model (memoised)",
            bench(lambda: cost_usd("openai", "nope-1", usage), runs, 20000),
        ),
        (
            "cost_usd perplexity sonar (genai slow path)",
            bench(lambda: cost_usd("perplexity", "sonar", usage), runs, 500),
        ),
    ]
    per_chunk = rows[7][1] / len(stream)
    rows.insert(8, ("  -> per SSE chunk (openai)", per_chunk))
    width = max(len(name) for name, _ in rows)
    print(f"{'operation'.ljust(width)}  µs (median of {runs})")
    print(f"{'-' * width}  ----------")
    for name, us in rows:
        print(f"{name.ljust(width)}  {us:10.2f}")


if __name__ == "__main__":
    main()
