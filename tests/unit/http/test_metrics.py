"""pipeline.metrics renders valid Prometheus text; the app counts what it serves."""

from __future__ import annotations

import math
import re
import threading

import httpx
import pytest

from pipeline.metrics import CONTENT_TYPE, Registry, format_value
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
    assert samples[(bucket, frozenset({("route", "/a"), ("le", "1")}))] == 3
    assert samples[(bucket, frozenset({("route", "/a"), ("le", "+Inf")}))] == 4
    assert samples[("t_latency_seconds_count", frozenset({("route", "/a")}))] == 4
    assert samples[("t_latency_seconds_sum", frozenset({("route", "/a")}))] == pytest.approx(3.65)
    assert "# HELP t_temperature Degrees.\\nSecond line \\\\ slash\n" in text


def test_label_values_are_escaped() -> None:
    registry = Registry()
    registry.counter("t_total", "T.", ("path",)).labels('a"b\\c\nd').inc()
    line = registry.render().splitlines()[-1]
    assert line == 't_total{path="a\\"b\\\\c\\nd"} 1'
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
        (lambda r: r.counter("1bad", "x"), "invalid metric name"),
        (lambda r: r.counter("t", "x", ("le",)), "invalid label name"),
        (lambda r: r.counter("t", "x", ("__x",)), "invalid label name"),
        (lambda r: r.counter("t", "x", ("a",)).inc(), "use .labels"),
        (lambda r: r.counter("t", "x", ("a",)).labels("1", "2"), "takes 1 label"),
        (lambda r: r.counter("t", "x").inc(-1), "only goes up"),
        (lambda r: r.histogram("t", "x", buckets=()), "buckets"),
    ],
    ids=[
        "name",
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


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1"), (0.25, "0.25"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN")],
    ids=["integral", "fraction", "inf", "minus-inf", "nan"],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


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
