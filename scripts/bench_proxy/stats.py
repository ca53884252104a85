"""One measured cell (requests/s, latency percentiles, CPU per request) and its pooling over
rounds."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .client import Window


@dataclass(frozen=True)
class Cell:
    """One measured cell: requests/s, latency percentiles (ms), CPU per request (µs)."""

    rps: float
    p50: float
    p99: float
    n: int
    sent: int
    errors: int
    proxy_cpu_us: float = float("nan")
    recorder_cpu_us: float = float("nan")


def summarise(
    latencies: list[float],
    seconds: float,
    sent: int,
    errors: int,
    proxy_cpu: float = 0.0,
    recorder_cpu: float = 0.0,
) -> Cell:
    lat = sorted(latencies)
    if not lat:
        return Cell(0.0, float("nan"), float("nan"), 0, sent, errors)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
    n = len(lat)
    return Cell(
        n / seconds, q[49] * 1e3, q[98] * 1e3, n, sent, errors,
        proxy_cpu / n * 1e6, recorder_cpu / n * 1e6,
    )  # fmt: skip


@dataclass
class Pooled:
    """Samples of one cell over all rounds."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    sent: int = 0
    errors: int = 0
    proxy_cpu: float = 0.0
    recorder_cpu: float = 0.0

    def add(self, w: Window, seconds: float) -> None:
        self.latencies += w.latencies
        self.seconds += seconds
        self.sent += w.sent
        self.errors += w.errors
        self.proxy_cpu += w.proxy_cpu
        self.recorder_cpu += w.recorder_cpu

    def cell(self) -> Cell:
        return summarise(
            self.latencies, self.seconds, self.sent, self.errors, self.proxy_cpu, self.recorder_cpu
        )
