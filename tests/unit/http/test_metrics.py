"""pipeline.metrics (on prometheus_client) renders valid Prometheus text under the names we
declare, with process metrics; the app counts what it serves."""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from pipeline.metrics import CONTENT_TYPE, Registry
from tests.unit.http.conftest import CountingStore, put_segment

_COMMENT = re.compile(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict reader of text format 0.0.4: every line must be a comment or a sample, every
    sample must belong to a declared family, and label sets must parse completely."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        comment = _COMMENT.match(line)
        if comment:
            kind, name, rest = comment.groups()
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped")
                assert name not in types, f"{name} typed twice"
                types[name] = rest
            continue
        sample = _SAMPLE.match(line)
        assert sample, f"not a sample: {line!r}"
        name, _, label_text, value = sample.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"{name} has no TYPE"
        labels: list[tuple[str, str]] = []
        position = 0
        while label_text and position < len(label_text):
            match = _LABEL.match(label_text, position)
            assert match, f"bad labels in {line!r}"
            labels.append((match[1], match[2]))
            position = match.end()
        samples[(name, frozenset(labels))] = float(value)
    return samples


def test_counter_gauge_histogram_render() -> None:
    registry = Registry()
    hits = registry.counter("t_hits_total", "Hits.", ("route",))
    hits.labels("/a").inc()
    hits.labels(route="/a").inc(2)
    temperature = registry.gauge("t_temperature", "Degrees.\nSecond line \\ slash")
    temperature.set(21.5)
    temperature.dec(0.5)
    size = registry.gauge("t_size", "Size from a function.")
    size.set_function(lambda: 7)
    latency = registry.histogram("t_latency_seconds", "Latency.", ("route",), buckets=(0.1, 1))
    for value in (0.05, 0.1, 0.5, 3):
        latency.labels("/a").observe(value)

    text = registry.render()
    samples = parse(text)
    assert samples[("t_hits_total", frozenset({("route", "/a")}))] == 3
    assert samples[("t_temperature", frozenset())] == 21
    assert samples[("t_size", frozenset())] == 7
    bucket = "t_latency_seconds_bucket"
    assert samples[(bucket, frozenset({("route", "/a"), ("le", "0.1")}))] == 2
    assert samples[(bucket, frozenset({("route", "/a"), ("le", "1.0")}))] == 3
    assert samples[(bucket, frozenset({("route", "/a"), ("le", "+Inf")}))] == 4
    assert samples[("t_latency_seconds_count", frozenset({("route", "/a")}))] == 4
    assert samples[("t_latency_seconds_sum", frozenset({("route", "/a")}))] == pytest.approx(3.65)
    assert "# HELP t_temperature Degrees.\\nSecond line \\\\ slash\n" in text


def test_label_values_are_escaped() -> None:
    registry = Registry()
    registry.counter("t_total", "T.", ("path",)).labels('a"b\\c\nd').inc()
    lines = [line for line in registry.render().splitlines() if line.startswith("t_total")]
    assert lines == ['t_total{path="a\\"b\\\\c\\nd"} 1.0']
    parse(registry.render())


def test_same_declaration_twice_is_one_metric() -> None:
    registry = Registry()
    first = registry.counter("t_total", "T.", ("a",))
    assert registry.counter("t_total", "T.", ("a",)) is first
    with pytest.raises(ValueError, match="already registered"):
        registry.gauge("t_total", "T.", ("a",))
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("t_total", "T.", ("b",))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.counter("1bad_total", "x"), "invalid metric name"),
        (lambda r: r.counter("t", "x"), "ends in _total"),
        (lambda r: r.counter("t_total", "x", ("le",)), "invalid label name"),
        (lambda r: r.counter("t_total", "x", ("__x",)), "invalid label name"),
        (lambda r: r.counter("t_total", "x", ("a",)).inc(), "missing label values"),
        (lambda r: r.counter("t_total", "x", ("a",)).labels("1", "2"), "Incorrect label count"),
        (lambda r: r.counter("t_total", "x").inc(-1), "non-negative"),
        (lambda r: r.histogram("t", "x", buckets=()), "buckets"),
    ],
    ids=[
        "name",
        "counter-suffix",
        "le-label",
        "reserved-label",
        "missing-labels",
        "extra-labels",
        "negative",
        "no-buckets",
    ],
)
def test_misuse_is_refused(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call(Registry())


def test_names_are_the_declared_ones_and_process_metrics_come_along() -> None:
    """No `_created` series beside ours (the names dashboards read stay as they were), and
    the library's process and GC metrics are there for free."""
    registry = Registry()
    registry.counter("t_total", "T.").inc()
    registry.histogram("t_seconds", "T.").observe(0.2)
    samples = parse(registry.render())
    names = {name for name, _ in samples}
    assert {"t_total", "t_seconds_count", "t_seconds_sum"} <= names
    assert not {name for name in names if name.endswith("_created")}
    assert "process_cpu_seconds_total" in names
    assert "python_gc_collections_total" in names


def test_value_reads_a_series() -> None:
    registry = Registry()
    counter = registry.counter("t_total", "T.", ("a",))
    counter.labels("x").inc(3)
    gauge = registry.gauge("t_level", "T.")
    gauge.set(4)
    assert counter.labels("x").value == 3
    assert counter.labels("y").value == 0
    assert gauge.value == 4


def test_counting_is_thread_safe() -> None:
    registry = Registry()
    counter = registry.counter("t_total", "T.", ("worker",))
    histogram = registry.histogram("t_seconds", "T.")

    def work() -> None:
        for _ in range(2000):
            counter.labels("w").inc()
            histogram.observe(0.01)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = parse(registry.render())
    assert samples[("t_total", frozenset({("worker", "w")}))] == 16000
    assert samples[("t_seconds_count", frozenset())] == 16000


async def test_metrics_endpoint_counts_requests_and_cache(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    put_segment(store, "streams/s1/720p30/000001.ts", b"seg")
    for _ in range(3):
        await client.get("/live/demo/720p30/s1/000001.ts")
    await client.get("/nothing/here")

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    samples = parse(response.text)
    route = "/live/{channel}/{rendition}/{stream_id}/{seq}.ts"
    requests = "onair_http_requests_total"
    assert samples[(requests, frozenset({("route", route), ("status", "200")}))] == 3
    assert samples[(requests, frozenset({("route", "unmatched"), ("status", "404")}))] == 1
    lookups = "onair_http_cache_lookups_total"
    assert samples[(lookups, frozenset({("result", "miss")}))] == 1
    assert samples[(lookups, frozenset({("result", "hit")}))] == 2
    assert samples[("onair_http_cache_store_reads_total", frozenset())] == 1
    duration = "onair_http_request_duration_seconds_count"
    assert samples[(duration, frozenset({("route", route)}))] == 3
