"""The chat server's followers on the real broker, in-process, on topics of their own: a
partition's records reach the loop once it is wanted (none from before), and moderation
records are replays exactly when they were in the topic at the start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from gateway.chat.followers import ModerationFollower, PartitionFollower
from tests.integration.test_follower import _produce, _topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _until(what: str, ok: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def _decode(key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
    return (key or b"").decode(), (value or b"").decode()


async def test_a_wanted_partition_is_delivered_from_its_end_in_order(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 3)
    delivered: list[tuple[str, str]] = []
    follower = PartitionFollower(kafka_bootstrap, topic, _decode, delivered.extend, linger_s=0.2)
    follower.start()
    try:
        _produce(kafka_bootstrap, topic, [(1, b"before want")], key=b"room")
        await asyncio.wait_for(follower.want(1), 10)
        _produce(kafka_bootstrap, topic, [(1, b"m%d" % i) for i in range(5)], key=b"room")
        _produce(kafka_bootstrap, topic, [(2, b"not wanted")], key=b"other")
        await _until("delivered", lambda: len(delivered) >= 5)
        assert delivered == [("room", f"m{i}") for i in range(5)]
        follower.release(1)
        await _until("released", lambda: follower.follower.assigned() == set())
        assert follower.follower.restarts == 0
    finally:
        follower.stop()


async def test_moderation_replays_exactly_what_was_there_at_the_start(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = _topic(kafka_bootstrap, unique_name, 2, **{"cleanup.policy": "compact"})
    before = [(0, b"a0"), (1, b"b0"), (0, b"a1")]
    for partition, value in before:
        _produce(kafka_bootstrap, topic, [(partition, value)], key=value)
    delivered: list[tuple[bytes, bool]] = []

    def deliver(values: list[bytes], replay: bool) -> None:
        delivered.extend((value, replay) for value in values)

    follower = ModerationFollower(kafka_bootstrap, topic, deliver)
    await follower.start(timeout_s=30)
    try:
        await asyncio.sleep(0)  # the backlog's deliveries were handed to the loop
        assert sorted(delivered) == sorted((value, True) for _, value in before)
        for partition, value in [(1, b"b1"), (0, b"a2")]:
            _produce(kafka_bootstrap, topic, [(partition, value)], key=value)
        await _until("live records", lambda: len(delivered) >= 5)
        assert delivered[3:] == [(b"b1", False), (b"a2", False)]
    finally:
        follower.stop()
