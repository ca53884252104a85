"""Benchmark: what the Govrix addon costs on top of bare mitmproxy (not a test).

    scripts/govrix bench proxy [--seconds 4] [--warmup 1] [--rounds 2] [--ttfb-requests 50]
    .venv/bin/python -m scripts.bench_proxy [same options] [--no-write]

One run, one machine, one fake upstream (scripts/bench_upstream.py, its own process):

1. Requests/s and p50/p99 latency through bare ``mitmdump`` and ``mitmdump -s addon/main.py``
   (identical options otherwise), HTTP and HTTPS, keep-alive, concurrency 1 and 32. The clients
   address the upstream itself through the proxy (absolute-form ``POST http://…`` or ``CONNECT``
   + TLS trusting the proxy's CA), so neither proxy rewrites anything. Targets: the addon keeps
   >= 90% of bare throughput and adds <= 0.3 ms at p50. CPU per request is read from /proc for
   the mitmdump process and, for the addon, its recorder child process (addon/recorder/).
2. Time to first byte of an SSE stream: direct, via bare mitmdump, via the addon.
3. Governance on (PII scan + a 20-rule policy + a global budget that never triggers) vs off
   (``GOVRIX_PII_SCAN=0``, no policy, no budget). Target: <= 5% of throughput.

Each addon proxy records into its own scratch database on the embedded cluster (or
GOVRIX_DATABASE_URL's server); the rows are counted at the end so an addon run that recorded
nothing (host not taken for a provider) cannot pass for a fast one. The client is a raw asyncio
HTTP/1.1 client (httpx costs too much client CPU to measure a proxy on a 2-core machine). Cells
run ``--rounds`` times in alternating order (bare first, then addon first) to spread drift.
Results are printed as markdown and written into BENCHMARKS.md's "## Proxy" section.

The package, by concern: ``client.py`` (the raw HTTP/1.1 client, the load and TTFB loops),
``procs.py`` (the mitmdump processes and their readiness), ``cpu.py`` (CPU seconds from /proc),
``fixtures.py`` (the scratch databases' budget, the policy file, the recorded-event check),
``stats.py`` (cells and their pooling), ``report.py`` (the markdown and BENCHMARKS.md),
``run.py`` (the three measurements, and ``main``), ``replay.py`` (conversations replayed through
the addon proxy with a scripted provider, for ``scripts/bench_attacks.py``).
``scripts/bench_instructions.py`` reuses the client, the processes and the fixtures through the
names below.
"""

from __future__ import annotations

from .client import Target, chat_body, connect, load, read_response, request_bytes, ttfb
from .fixtures import add_budget, write_policy
from .procs import Proxy, Upstream, free_port

__all__ = [
    "Proxy",
    "Target",
    "Upstream",
    "add_budget",
    "chat_body",
    "connect",
    "free_port",
    "load",
    "read_response",
    "request_bytes",
    "ttfb",
    "write_policy",
]
