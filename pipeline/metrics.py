"""Each process's Prometheus metrics, on `prometheus_client`.

A `Registry` is one process's `CollectorRegistry`, with the library's process, platform and
garbage-collector metrics already in it:

    registry = Registry()
    requests = registry.counter("onair_http_requests_total", "HTTP requests.", ("route", "status"))
    requests.labels("/live/{channel}/master.m3u8", "200").inc()
    latency = registry.histogram("onair_http_request_duration_seconds", "Latency.", ("route",))
    latency.labels("/metrics").observe(0.003)
    text = registry.render()

Asking the registry twice for the same name returns the same metric when kind and label
names agree, so components can declare what they count without coordinating who creates it
first. Metrics are thread-safe (the library's); `.value` reads a series through the
library's public `collect()`, for the code that reports its own counts (the origin cache's
stats, tests).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# Classic Prometheus names only (the library accepts any UTF-8 name since Prometheus 3; our
# scrapers and dashboards do not), and no `le` label outside the histogram's own.
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# The series names stay what they were before the library: no `<name>_created` beside each
# counter and histogram (dashboards and alerts read the names, not the creation times).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def _sample_value(metric: Any, sample_name: str) -> float:
    """The one sample called `sample_name` of an unlabelled metric or a labelled child."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == sample_name:
                return float(sample.value)
    return 0.0


class Counter(prometheus_client.Counter):
    """A counter whose series (the metric itself, or a `.labels()` child) read as `.value`."""

    @property
    def value(self) -> float:
        return _sample_value(self, self._name + "_total")


class Gauge(prometheus_client.Gauge):
    @property
    def value(self) -> float:
        return _sample_value(self, self._name)


class Histogram(prometheus_client.Histogram):
    pass


MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)


class Registry:
    """A named set of metrics rendered together, with process, platform and GC metrics."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.collectors = CollectorRegistry(auto_describe=True)
        if process_metrics:
            ProcessCollector(registry=self.collectors)
            PlatformCollector(registry=self.collectors)
            GCCollector(registry=self.collectors)
        self._lock = threading.Lock()
        self._metrics: dict[str, tuple[Counter | Gauge | Histogram, tuple[Any, ...]]] = {}

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        if not name.endswith("_total"):
            raise ValueError(f"invalid metric name {name!r}: a counter's name ends in _total")
        return self._declare(Counter, name, help_text, labelnames)

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._declare(Gauge, name, help_text, labelnames)

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct and non-empty")
        return self._declare(Histogram, name, help_text, labelnames, buckets=bounds)

    def _declare(
        self,
        kind: type[MetricT],
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        **extra: Any,
    ) -> MetricT:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} on {name}")
        shape = (kind, tuple(labelnames), *extra.values())
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                metric = kind(name, help_text, tuple(labelnames), registry=self.collectors, **extra)
                self._metrics[name] = (metric, shape)
                return metric
        found, found_shape = existing
        if found_shape != shape or not isinstance(found, kind):
            raise ValueError(f"metric {name} is already registered differently")
        return found

    def render(self) -> str:
        """Every metric in text format 0.0.4."""
        return generate_latest(self.collectors).decode()
