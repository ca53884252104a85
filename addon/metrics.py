"""Prometheus metrics of the proxy, served on ``GOVRIX_PROXY_METRICS_HOST`` (127.0.0.1) port
``GOVRIX_PROXY_METRICS_PORT`` (4002). Counters and gauges only: no value of any call."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "govrix_proxy_requests",
    "LLM requests seen, by provider and outcome (forwarded, blocked, retired, budget, policy, unavailable).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "govrix_proxy_events", "Events emitted, by direction.", ["direction"], registry=REGISTRY
)
BYTES = Counter(
    "govrix_proxy_bytes",
    "Body bytes of recorded calls, by direction.",
    ["direction"],
    registry=REGISTRY,
)
PARSE_ERRORS = Counter(
    "govrix_proxy_parse_errors",
    "Bodies that could not be parsed (forwarded anyway).",
    ["provider", "phase"],
    registry=REGISTRY,
)
HOOK_ERRORS = Counter(
    "govrix_proxy_hook_errors",
    "Addon hooks that failed (traffic still flowed).",
    ["hook"],
    registry=REGISTRY,
)
ADDED_LATENCY = Histogram(
    "govrix_proxy_added_latency_seconds",
    "CPU time our addon spends per request in its hooks (what we add to mitmproxy's own).",
    buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "govrix_proxy_upstream_latency_seconds",
    "Request start to response end, as seen by the proxy.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
TTFB = Histogram(
    "govrix_proxy_ttfb_seconds",
    "Request start to first response byte.",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


@functools.cache
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: the label lookup costs more than the increment."""
    return metric.labels(*labels)


class CallbackCollector(Collector):
    """Gauges and counters read from live objects at scrape time (writer, agent table, pricing).

    ``labelled`` are counters with labels; ``labelled_gauges`` gauges with labels (e.g. an
    info-style ``..._info{version=...} 1`` naming what a proxy runs).
    """

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}
        self.labelled: list[
            tuple[str, str, list[str], Callable[[], dict[tuple[str, ...], float]]]
        ] = []
        self.labelled_gauges: dict[
            str, tuple[str, list[str], Callable[[], dict[tuple[str, ...], float]]]
        ] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for name, (doc, fn) in self.gauges.items():
            yield GaugeMetricFamily(name, doc, value=fn())
        for name, (doc, fn) in self.counters.items():
            yield CounterMetricFamily(name, doc, value=fn())
        for name, doc, labels, series in self.labelled:
            fam = CounterMetricFamily(name, doc, labels=labels)
            for key, value in series().items():
                fam.add_metric(list(key), value)
            yield fam
        for name, (doc, labels, series) in self.labelled_gauges.items():
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            for key, value in series().items():
                gauge.add_metric(list(key), value)
            yield gauge


LIVE = CallbackCollector()
REGISTRY.register(LIVE)

#: The recorder process's latest exposition (``addon/recorder/`` sends one every second).
REMOTE: list[Callable[[], bytes]] = []


class MergedCollector(Collector):
    """This process's metrics plus the recorder process's, one family per name.

    Series present in both (e.g. hook errors counted on either side) are summed. ``_created``
    samples (optional in the text format, and not additive) are left out.
    """

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.parser import text_string_to_metric_families

        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        sources: list[Iterable[Metric]] = [REGISTRY.collect()]
        for fetch in REMOTE:
            text = fetch()
            if text:
                sources.append(text_string_to_metric_families(text.decode()))
        for source in sources:
            for fam in source:
                if fam.name.endswith("_created"):
                    continue
                if fam.name not in families:
                    families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                    values[fam.name] = {}
                series = values[fam.name]
                for sample in fam.samples:
                    if sample.name.endswith("_created"):
                        continue
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    series[key] = series.get(key, 0.0) + sample.value
        for name, fam in families.items():
            for (sample_name, labels), value in values[name].items():
                fam.add_sample(sample_name, dict(labels), value)
            yield fam


EXPOSED = CollectorRegistry(auto_describe=False)
EXPOSED.register(MergedCollector())


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Start the scrape endpoint in a daemon thread (0 disables it)."""
    if port:
        start_http_server(port, addr=host, registry=EXPOSED)
