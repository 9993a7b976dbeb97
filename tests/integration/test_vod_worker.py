"""The VOD worker on the real broker: a long build does not hold up the next stream's VOD,
the partition is committed only past finished builds, and a StreamEnded whose build keeps
failing goes to onair.deadletter and is passed instead of blocking the partition."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objectstore.local import LocalStore
from schemas.codec import Codec
from topics.admin import ensure_topics, group_lag
from topics.client import CheckedProducer, Delivery
from topics.deadletter import count_by_group
from topics.specs import STREAMS, all_topics
from workers.vod.worker import VodWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[VodWorker]:
    ensure_topics(kafka_bootstrap, all_topics())
    vod = VodWorker(
        kafka_bootstrap,
        LocalStore(tmp_path / "store"),
        tmp_path / "spool",
        group=f"test-vod-{uuid.uuid4().hex[:8]}",
        prefetch=False,
    )
    vod.dead_letters.pause_s = 0.05
    thread = threading.Thread(target=vod.run, name="vod-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while vod.health.render()[0] != 200:
        assert time.monotonic() < deadline, vod.health.render()
        assert thread.is_alive(), "the worker died while starting"
        time.sleep(0.1)
    yield vod
    vod.stop_event.set()
    thread.join(30)


def end_stream(bootstrap: str, channel: str, stream_id: str) -> Delivery:
    record = {
        "stream_id": stream_id,
        "channel": channel,
        "ended_ms": int(time.time() * 1000),
        "reason": "test",
        "last_sequence": 3,
    }
    return CheckedProducer(bootstrap).send(STREAMS, channel, Codec().encode("StreamEnded", record))


def committed(bootstrap: str, group: str, partition: int) -> int:
    """The group's committed offset on `partition` (other tests' events on other partitions
    do not move it)."""
    return next(
        p.committed for p in group_lag(bootstrap, group, STREAMS) if p.partition == partition
    )


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_long_build_does_not_hold_up_the_next_streams_vod(
    worker: VodWorker, kafka_bootstrap: str
) -> None:
    channel = f"vodw_{uuid.uuid4().hex[:8]}"  # one channel: both events on one partition
    slow, fast = f"{channel}-slow", f"{channel}-fast"
    release = threading.Event()
    finished: list[str] = []

    def make_vod(ended: dict[str, Any], partition: int, offset: int) -> None:
        del partition, offset
        if ended["stream_id"] == slow:
            assert release.wait(60)
        finished.append(ended["stream_id"])

    worker.make_vod = make_vod  # type: ignore[method-assign]
    first = end_stream(kafka_bootstrap, channel, slow)
    second = end_stream(kafka_bootstrap, channel, fast)
    assert second.partition == first.partition
    wait_until(lambda: finished == [fast], 30, "the second stream's VOD waited for the first")
    time.sleep(1.0)  # the loop settles several times meanwhile
    position = committed(kafka_bootstrap, worker.group, first.partition)
    assert position <= first.offset, "committed past a running build"
    release.set()
    wait_until(lambda: finished == [fast, slow], 30, "the long build never finished")
    wait_until(
        lambda: committed(kafka_bootstrap, worker.group, first.partition) >= second.offset + 1,
        30,
        "both events were not committed once both builds finished",
    )


def test_a_build_that_keeps_failing_is_dead_lettered_and_passed(
    worker: VodWorker, kafka_bootstrap: str
) -> None:
    channel = f"vodp_{uuid.uuid4().hex[:8]}"
    bad, good = f"{channel}-bad", f"{channel}-good"
    attempts: list[str] = []

    def make_vod(ended: dict[str, Any], partition: int, offset: int) -> None:
        del partition, offset
        attempts.append(ended["stream_id"])
        if ended["stream_id"] == bad:
            raise KeyError("renditions")  # a bug meeting odd data, every time

    worker.make_vod = make_vod  # type: ignore[method-assign]
    dead_before = count_by_group(kafka_bootstrap).get(worker.group, 0)
    end_stream(kafka_bootstrap, channel, bad)
    last = end_stream(kafka_bootstrap, channel, good)
    wait_until(
        lambda: committed(kafka_bootstrap, worker.group, last.partition) >= last.offset + 1,
        30,
        "the poison event blocked its partition",
    )
    assert attempts.count(bad) == worker.build_attempts and attempts.count(good) == 1
    assert count_by_group(kafka_bootstrap).get(worker.group, 0) == dead_before + 1
