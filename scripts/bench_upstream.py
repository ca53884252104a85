"""The fake LLM upstream of ``scripts/bench_proxy/``: a minimal raw asyncio HTTP/1.1 server.

It runs in its own process (``start()``), so its CPU never competes with the benchmark client
for one GIL, and does as little as an HTTP server can: keep-alive, one canned OpenAI
``chat.completion`` answer (~600 bytes, ``usage`` block, ``content-length``) for every request,
or, when the request body asks for ``"stream": true``, an SSE stream of six chunks (the first at
once, then five more 50 ms apart, the last with ``usage`` and ``[DONE]``) in chunked encoding.
It listens twice: plain HTTP and TLS with a self-signed certificate for 127.0.0.1 (``make_cert``).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import multiprocessing
import multiprocessing.synchronize
import ssl
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: Time between the stream's chunks after the first.
STREAM_GAP_S = 0.05
#: Chunks after the first one.
STREAM_MORE = 5

_COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000000001",
    "object": "chat.completion",
    "created": 1735689600,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_0123456789",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": (
                    "The quarterly report shows revenue up 12% year over year, driven mostly by "
                    "the enterprise tier. Churn fell to 3.1%. I recommend focusing the next "
                    "sprint on onboarding, where most trial users drop off."
                ),
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 512,
        "completion_tokens": 48,
        "total_tokens": 560,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}
BODY = msgspec.json.encode(_COMPLETION)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _sse_chunk(delta: str | None, *, usage: bool = False) -> bytes:
    """One ``data:`` event as an HTTP chunk; ``usage`` adds the final usage event and [DONE]."""
    ev = {
        "id": "chatcmpl-bench-stream",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": None}
        ],
    }
    data = b"data: " + msgspec.json.encode(ev) + b"\n\n"
    if usage:
        tail = {
            "id": "chatcmpl-bench-stream",
            "object": "chat.completion.chunk",
            "created": 1735689600,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [],
            "usage": {"prompt_tokens": 512, "completion_tokens": 6, "total_tokens": 518},
        }
        data += b"data: " + msgspec.json.encode(tail) + b"\n\ndata: [DONE]\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


STREAM_CHUNKS = [_sse_chunk(w) for w in ("The", " report", " shows", " growth", ".")] + [
    _sse_chunk(None, usage=True)
]


def _content_length(head: bytes) -> int:
    """The ``content-length`` of a lower-cased request head (no trailing blank line); 0 if none."""
    i = head.find(b"content-length:")
    if i < 0:
        return 0
    j = head.find(b"\r\n", i)
    return int(head[i + 15 : j if j >= 0 else len(head)])


class _Conn(asyncio.Protocol):
    """One keep-alive connection: parse requests from a buffer, answer each in order."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        # A stream answer is in progress: the next request waits for it (no pipelining needed).
        while self.streaming is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _content_length(bytes(self.buf[:end]).lower())
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            assert self.transport is not None
            if b'"stream":true' in body or b'"stream": true' in body:
                self.streaming = asyncio.get_running_loop().create_task(self._stream())
            else:
                self.transport.write(RESPONSE)

    async def _stream(self) -> None:
        t = self.transport
        assert t is not None
        t.write(STREAM_HEAD + STREAM_CHUNKS[0])
        for chunk in STREAM_CHUNKS[1:]:
            await asyncio.sleep(STREAM_GAP_S)
            t.write(chunk)
        t.write(b"0\r\n\r\n")
        self.streaming = None
        if self.buf:
            self.data_received(b"")


@dataclass(frozen=True)
class Cert:
    certfile: Path
    keyfile: Path


def make_cert(directory: Path) -> Cert:
    """A self-signed certificate for 127.0.0.1 / localhost (the proxy runs with ssl_insecure)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    out = Cert(directory / "upstream-cert.pem", directory / "upstream-key.pem")
    out.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out


async def _serve(
    http_port: int, https_port: int, cert: Cert, ready: multiprocessing.synchronize.Event
) -> None:
    loop = asyncio.get_running_loop()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert.certfile, cert.keyfile)
    plain = await loop.create_server(_Conn, "127.0.0.1", http_port, backlog=1024)
    secure = await loop.create_server(_Conn, "127.0.0.1", https_port, ssl=tls, backlog=1024)
    ready.set()
    async with plain, secure:
        await asyncio.gather(plain.serve_forever(), secure.serve_forever())


def run(
    http_port: int, https_port: int, cert: Cert, ready: multiprocessing.synchronize.Event
) -> None:
    """The child process's entry point."""
    asyncio.run(_serve(http_port, https_port, cert, ready))


def start(http_port: int, https_port: int, cert: Cert) -> multiprocessing.process.BaseProcess:
    """Start the upstream in its own (spawned) process; returns once both ports listen."""
    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    proc = mp.Process(
        target=run, args=(http_port, https_port, cert, ready), name="bench-upstream", daemon=True
    )
    proc.start()
    if not ready.wait(15):
        proc.terminate()
        raise RuntimeError("the fake upstream did not start")
    return proc
