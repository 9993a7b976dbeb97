"""Prometheus text exposition (format 0.0.4) without a third-party client.

A `Registry` holds metrics; each metric holds one child per label-value tuple:

    registry = Registry()
    requests = registry.counter("onair_http_requests_total", "HTTP requests.", ("route", "status"))
    requests.labels("/live/{channel}/master.m3u8", "200").inc()
    latency = registry.histogram("onair_http_request_duration_seconds", "Latency.", ("route",))
    latency.labels("/metrics").observe(0.003)
    text = registry.render()

A metric without label names is its own child (`counter.inc()`). Asking the registry twice
for the same name returns the same metric when kind and label names agree, so components
can declare what they count without coordinating who creates it first. Everything is
thread-safe: workers update metrics from executor threads.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def format_value(value: float) -> str:
    """Go-style float text as Prometheus writes it: `+Inf`, `-Inf`, `NaN`, integers bare."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class CounterChild:
    """One labelled series of a counter: only goes up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        with self._lock:
            return self._value


class GaugeChild:
    """One labelled series of a gauge: set, raised, lowered, or read from a function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from `function` at render time (e.g. a cache's current size)."""
        with self._lock:
            self._function = function

    @property
    def value(self) -> float:
        with self._lock:
            function, value = self._function, self._value
        return float(function()) if function is not None else value


class HistogramChild:
    """One labelled series of a histogram: cumulative buckets, sum and count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._lock = threading.Lock()
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        """Cumulative `(upper bound, count)` pairs ending with +Inf, the sum, the count."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self._bounds, math.inf), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, total, running


ChildT = TypeVar("ChildT", CounterChild, GaugeChild, HistogramChild)


class _Metric(Generic[ChildT]):
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} on {name}")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], ChildT] = {}

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def labels(self, *values: str, **named: str) -> ChildT:
        """The series for these label values, positional or by name (not both)."""
        if values and named:
            raise ValueError("pass label values by position or by name, not both")
        if named:
            if set(named) != set(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(named)}")
            values = tuple(named[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes {len(self.labelnames)} label values")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
            return child

    def _default(self) -> ChildT:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels()")
        return self.labels()

    def _series(self) -> list[tuple[tuple[str, ...], ChildT]]:
        with self._lock:
            return sorted(self._children.items())

    def render_into(self, lines: list[str]) -> None:
        lines.append(f"# HELP {self.name} {_escape_help(self.help)}")
        lines.append(f"# TYPE {self.name} {self.kind}")
        for values, child in self._series():
            self._render_child(lines, values, child)

    def _render_child(self, lines: list[str], values: tuple[str, ...], child: ChildT) -> None:
        raise NotImplementedError


class Counter(_Metric[CounterChild]):
    kind = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._default().inc(amount)

    @property
    def value(self) -> float:
        return self._default().value

    def _render_child(self, lines: list[str], values: tuple[str, ...], child: CounterChild) -> None:
        labels = _label_text(self.labelnames, values)
        lines.append(f"{self.name}{labels} {format_value(child.value)}")


class Gauge(_Metric[GaugeChild]):
    kind = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self._default().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._default().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._default().dec(amount)

    def set_function(self, function: Callable[[], float]) -> None:
        self._default().set_function(function)

    @property
    def value(self) -> float:
        return self._default().value

    def _render_child(self, lines: list[str], values: tuple[str, ...], child: GaugeChild) -> None:
        labels = _label_text(self.labelnames, values)
        lines.append(f"{self.name}{labels} {format_value(child.value)}")


class Histogram(_Metric[HistogramChild]):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct and non-empty")
        self.buckets = bounds
        super().__init__(name, help_text, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self._default().observe(value)

    def _render_child(
        self, lines: list[str], values: tuple[str, ...], child: HistogramChild
    ) -> None:
        cumulative, total, count = child.snapshot()
        for bound, running in cumulative:
            labels = _label_text(self.labelnames, values, f'le="{format_value(bound)}"')
            lines.append(f"{self.name}_bucket{labels} {running}")
        labels = _label_text(self.labelnames, values)
        lines.append(f"{self.name}_sum{labels} {format_value(total)}")
        lines.append(f"{self.name}_count{labels} {count}")


AnyMetric = Counter | Gauge | Histogram


class Registry:
    """A named set of metrics rendered together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, AnyMetric] = {}

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = self._register(Counter(name, help_text, labelnames))
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = self._register(Gauge(name, help_text, labelnames))
        assert isinstance(metric, Gauge)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        metric = self._register(Histogram(name, help_text, labelnames, buckets))
        assert isinstance(metric, Histogram)
        return metric

    def _register(self, metric: AnyMetric) -> AnyMetric:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is None:
                self._metrics[metric.name] = metric
                return metric
        same = type(existing) is type(metric) and existing.labelnames == metric.labelnames
        if isinstance(existing, Histogram) and isinstance(metric, Histogram):
            same = same and existing.buckets == metric.buckets
        if not same:
            raise ValueError(f"metric {metric.name} is already registered differently")
        return existing

    def get(self, name: str) -> AnyMetric:
        with self._lock:
            return self._metrics[name]

    def render(self) -> str:
        """Every metric in text format 0.0.4, sorted by name, newline-terminated."""
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines: list[str] = []
        for metric in metrics:
            metric.render_into(lines)
        return "\n".join(lines) + "\n" if lines else ""
