"""Following topics on the real broker: restarts that lose nothing and show in /healthz and
/metrics, caught-up and bounded reads, reads from a time, partitions taken on and off."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from confluent_kafka import KafkaError, Message, Producer

from pipeline.health import Health
from pipeline.metrics import Registry
from pipeline.metrics_server import serve_metrics
from schemas.codec import Codec
from topics.admin import ensure_topics
from topics.follower import Backoff, Follower
from topics.reader import END, Start, read
from topics.specs import TopicSpec
from topics.table import TableReader

pytestmark = pytest.mark.integration

T = TypeVar("T")
Record = tuple[int, int, bytes]  # partition, offset, value


def _topic(bootstrap: str, name: str, partitions: int, **config: str) -> str:
    topic = f"test.follower.{name}"
    spec = TopicSpec(topic, "test", partitions, {"retention.ms": "3600000", **config})
    ensure_topics(bootstrap, [spec])
    return topic


def _produce(
    bootstrap: str,
    topic: str,
    items: list[tuple[int, bytes]],
    *,
    timestamps: list[int] | None = None,
    key: bytes | None = None,
) -> list[Record]:
    """Write `(partition, value)` items in order; → what the broker stored, in that order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    stored: list[Record] = []
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err.str())
        else:
            stored.append((msg.partition() or 0, msg.offset() or 0, msg.value() or b""))

    for index, (partition, value) in enumerate(items):
        extra: dict[str, Any] = {} if timestamps is None else {"timestamp": timestamps[index]}
        producer.produce(
            topic, value=value, key=key, partition=partition, on_delivery=delivered, **extra
        )
    assert producer.flush(30) == 0
    assert not errors, errors
    return sorted(stored)


def _by_partition(records: list[Record]) -> dict[int, list[tuple[int, bytes]]]:
    """Per partition, (offset, value) in the order given."""
    found: dict[int, list[tuple[int, bytes]]] = {}
    for partition, offset, value in records:
        found.setdefault(partition, []).append((offset, value))
    return found


def _records(messages: list[Message]) -> list[Record]:
    return [(m.partition() or 0, m.offset() or 0, m.value() or b"") for m in messages]


def _wait(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 30) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout_s:.0f} s")
        time.sleep(0.05)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _sample(text: str, name: str, follower: str) -> float:
    """The value of `name{follower="…"}` in Prometheus text."""
    pattern = re.compile(rf'^{name}{{follower="{re.escape(follower)}"}} (\S+)$', re.MULTILINE)
    match = pattern.search(text)
    assert match is not None, f"no {name} for {follower} in:\n{text}"
    return float(match.group(1))


class Collector:
    """A handler that keeps what it completed, failing while `failing(batch)` says so."""

    def __init__(self, failing: Callable[[list[Message]], bool] = lambda batch: False) -> None:
        self.failing = failing
        self.lock = threading.Lock()
        self.handled: list[Record] = []
        self.failures = 0

    def __call__(self, batch: list[Message]) -> None:
        if self.failing(batch):
            with self.lock:
                self.failures += 1
            raise RuntimeError("boom on the poison batch")
        with self.lock:
            self.handled.extend(_records(batch))

    def values(self) -> list[bytes]:
        with self.lock:
            return [value for _, _, value in self.handled]

    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.handled)


@pytest.fixture
def served() -> Iterator[tuple[Registry, Health, str]]:
    registry, health = Registry(), Health("follower test")
    server = serve_metrics(registry, "127.0.0.1", 0, health)
    yield registry, health, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_failing_handler_restarts_the_follower_visibly_and_loses_nothing(
    kafka_bootstrap: str, unique_name: str, served: tuple[Registry, Health, str]
) -> None:
    registry, health, base = served
    topic = _topic(kafka_bootstrap, unique_name, 3)
    before = _produce(kafka_bootstrap, topic, [(i % 3, b"a%d" % i) for i in range(30)])
    healed = threading.Event()
    handler = Collector(lambda batch: not healed.is_set() and b"poison" in _values(batch))
    name = f"test:{unique_name}"
    follower = Follower(
        name,
        kafka_bootstrap,
        topic,
        handler,
        registry=registry,
        max_batch=7,
        backoff=Backoff(initial_s=0.2, max_s=1.0),
    )
    health.watch(name, follower.probe)
    with follower:
        assert follower.wait_caught_up(30)
        health.ok()
        assert _get(f"{base}/healthz") == (200, "ok\n")
        assert _sample(_get(f"{base}/metrics")[1], "onair_follower_restarts_total", name) == 0
        after = _produce(
            kafka_bootstrap,
            topic,
            [(1, b"b0"), (1, b"poison"), *[(i % 3, b"b%d" % i) for i in range(1, 30)]],
        )
        _, body = _wait("healthz", lambda: _get(f"{base}/healthz"), lambda r: r[0] == 503)
        assert body.startswith(f"degraded: {name}: restarting for ")
        assert "last error: RuntimeError: boom on the poison batch" in body
        # down it stays while the batch keeps failing: each new consumer is no recovery
        seen = set()
        deadline = time.monotonic() + 30
        while handler.failures < 4 and time.monotonic() < deadline:
            seen.add(_get(f"{base}/healthz")[0])
            time.sleep(0.02)
        assert handler.failures >= 4, "the poison batch was not handed again"
        assert seen == {503}
        metrics = _get(f"{base}/metrics")[1]
        assert _sample(metrics, "onair_follower_restarts_total", name) >= 3
        assert _sample(metrics, "onair_follower_up", name) == 0
        healed.set()
        _wait("healthz", lambda: _get(f"{base}/healthz"), lambda r: r == (200, "ok\n"))
        total = len(before) + len(after)
        _wait("records handled", lambda: len(handler.snapshot()), lambda n: n >= total)
        metrics = _get(f"{base}/metrics")[1]
        assert _sample(metrics, "onair_follower_up", name) == 1
        assert _sample(metrics, "onair_follower_records_total", name) == total
    assert _by_partition(handler.snapshot()) == _by_partition(before + after)
    assert _sample(_get(f"{base}/metrics")[1], "onair_follower_up", name) == 0  # stopped


def _values(batch: list[Message]) -> list[bytes]:
    return [m.value() or b"" for m in batch]


def test_caught_up_waits_for_the_handler_and_a_bounded_read_stops_at_its_ends(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 2)
    produced = _produce(kafka_bootstrap, topic, [(i % 2, b"r%d" % i) for i in range(40)])

    slow = Collector()

    def handler(batch: list[Message]) -> None:
        time.sleep(0.05)
        slow(batch)

    with Follower(f"slow:{unique_name}", kafka_bootstrap, topic, handler, max_batch=4) as follower:
        assert follower.wait_caught_up(30)
        assert sorted(slow.snapshot()) == produced  # caught up = handled, not merely polled
        assert follower.positions() == {0: 20, 1: 20}
        assert follower.ends() == {0: 20, 1: 20}

    reading = read(kafka_bootstrap, topic, idle_timeout_s=10, max_batch=1)
    first = next(reading)
    late = _produce(kafka_bootstrap, topic, [(0, b"late"), (1, b"late")])
    got = _records([first, *reading])  # returns: the late records are past its ends
    assert _by_partition(got) == _by_partition(produced)
    assert {offset for _, offset, _ in late} == {20}

    part = read(kafka_bootstrap, topic, partitions=[1], start=Start.offset(5), stop_at={1: 8})
    assert _records(list(part)) == [r for r in produced if r[0] == 1 and 5 <= r[1] < 8]

    empty = _topic(kafka_bootstrap, unique_name + "-empty", 2)
    started = time.monotonic()
    assert list(read(kafka_bootstrap, empty, idle_timeout_s=10)) == []
    with Follower(f"empty:{unique_name}", kafka_bootstrap, empty, Collector()) as follower:
        assert follower.wait_caught_up(10)
    assert time.monotonic() - started < 10


def test_reading_from_a_time_starts_at_the_first_record_at_or_after_it(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 2)
    base_ms = int(time.time() * 1000) - 60_000
    stamps = [base_ms + i * 1000 for i in range(20)]
    produced = _produce(
        kafka_bootstrap, topic, [(i % 2, b"t%d" % i) for i in range(20)], timestamps=stamps
    )
    cut_ms = base_ms + 10_500  # between t10 and t11
    expected = [r for r in produced if int(r[2][1:]) >= 11]
    assert len(expected) == 9

    got = _records(list(read(kafka_bootstrap, topic, start=Start.at_time(cut_ms))))
    assert _by_partition(got) == _by_partition(expected)
    assert list(read(kafka_bootstrap, topic, start=Start.at_time(base_ms + 3_600_000))) == []

    handler = Collector()
    start = Start.at_time(cut_ms)
    with Follower(f"time:{unique_name}", kafka_bootstrap, topic, handler, start=start) as follower:
        assert follower.wait_caught_up(30)
        assert _by_partition(handler.snapshot()) == _by_partition(expected)


def test_partitions_are_taken_on_and_released_while_running(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 3)
    handler = Collector()

    def handled(value: bytes) -> None:
        _wait(f"{value!r} handled", handler.values, lambda values: value in values)

    follower = Follower(
        f"chat:{unique_name}", kafka_bootstrap, topic, handler, partitions=(), start=END
    )
    with follower:
        assert follower.wait_caught_up(10)  # nothing to catch up with
        _produce(kafka_bootstrap, topic, [(1, b"p1 before add")])
        follower.add([1]).result(timeout=10)
        assert follower.assigned() == {1}
        _produce(kafka_bootstrap, topic, [(0, b"p0 not followed"), (1, b"p1 a")])
        handled(b"p1 a")

        follower.remove([1], after_s=60)  # a viewer left; another one joins within the linger
        _produce(kafka_bootstrap, topic, [(1, b"p1 during linger")])
        follower.add([1]).result(timeout=10)
        assert follower.assigned() == {1}
        handled(b"p1 during linger")

        follower.remove([1])  # released for good: its position is forgotten
        _wait("released", follower.assigned, lambda assigned: assigned == set())
        _produce(kafka_bootstrap, topic, [(1, b"p1 while released")])
        follower.add([1]).result(timeout=10)
        _produce(kafka_bootstrap, topic, [(1, b"p1 after add again")])
        handled(b"p1 after add again")

        follower.add([0]).result(timeout=10)
        assert follower.assigned() == {0, 1}
        _produce(kafka_bootstrap, topic, [(0, b"p0 after add"), (2, b"p2 not followed")])
        handled(b"p0 after add")
    assert handler.values() == [
        b"p1 a",
        b"p1 during linger",
        b"p1 after add again",
        b"p0 after add",
    ]


def test_a_table_reads_to_its_end_then_survives_a_failing_listener(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 2, **{"cleanup.policy": "compact"})
    codec = Codec()
    channel = {
        "name": "",
        "stream_key_hash": "h" * 64,
        "key_version": 1,
        "created_ms": 1,
        "updated_ms": 1,
    }

    def put(name: str) -> None:
        value = codec.encode("Channel", {**channel, "name": name})
        _produce(kafka_bootstrap, topic, [(len(name) % 2, value)], key=name.encode())

    for name in ("alpha", "beta", "gamma"):
        put(name)
    table = TableReader(kafka_bootstrap, topic, "Channel", codec)
    table.start(timeout=30)
    try:
        assert sorted(table.snapshot()) == ["alpha", "beta", "gamma"]
        heard: list[str] = []
        failed = threading.Event()

        def listener(key: str, record: dict[str, Any] | None) -> None:
            if key == "delta" and not failed.is_set():
                failed.set()
                raise RuntimeError("listener failed")
            heard.append(key)

        table.listeners.append(listener)
        put("delta")
        put("epsilon")
        assert table.wait_for(lambda data: "epsilon" in data, 30)
        _wait("listener heard", lambda: list(heard), lambda keys: "epsilon" in keys)
        assert failed.is_set() and "delta" in heard
        assert table.follower.restarts == 1
        assert table.follower.probe() is None
    finally:
        table.stop()
