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


def p50_p99(values: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile (inclusive method: within the samples); NaN if none."""
    if not values:
        return float("nan"), float("nan")
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98]


def summarise(
    latencies: list[float],
    seconds: float,
    sent: int,
    errors: int,
    proxy_cpu: float = 0.0,
    recorder_cpu: float = 0.0,
) -> Cell:
    if not latencies:
        return Cell(0.0, float("nan"), float("nan"), 0, sent, errors)
    p50, p99 = p50_p99(latencies)
    n = len(latencies)
    return Cell(
        n / seconds, p50 * 1e3, p99 * 1e3, n, sent, errors,
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
