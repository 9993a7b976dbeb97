"""Waiting for what a role needs from a broker that may have been formatted a second ago.

A new KRaft broker answers Metadata long before it can serve everything: a topic created a
moment ago has no elected leader yet (ListOffsets → NOT_LEADER_FOR_PARTITION), and the group
coordinator's `__consumer_offsets` is created and loaded on the first group request
(COORDINATOR_LOAD_IN_PROGRESS, or a FindCoordinator that times out). `wait_for_topics()`
polls until every partition of the named topics has a leader that answers ListOffsets and,
given a group, until that group's coordinator answers an OffsetFetch, with a bound: on time
it returns, saying once how long it waited; past the bound it raises `KafkaNotReady` naming
what was still missing. Every role calls it before it consumes, so none crashes on a new
broker or hangs without a word.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.errors import OnairError
from topics.client import make_consumer

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
_POLL_S = 0.25
_SAY_EVERY_S = 5.0


class KafkaNotReady(OnairError):
    """The broker did not get ready for a role within the bound."""


def wait_for_topics(
    bootstrap: str,
    topics: Iterable[str],
    *,
    group: str | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    on_wait: Callable[[str], None] | None = None,
) -> float:
    """Block until each of `topics` is served (every partition led, ListOffsets answered)
    and, with `group`, its coordinator answers. → seconds waited. `on_wait(reason)` hears
    what is still missing (e.g. a health object's "starting: …")."""
    names = sorted(set(topics))
    started = time.monotonic()
    deadline = started + timeout_s
    said = 0.0
    quick: dict[str, Any] = {"socket.timeout.ms": 5000}
    consumer = make_consumer(bootstrap, group, **quick)
    try:
        while True:
            reason = _missing(consumer, names, group)
            if reason is None:
                waited = time.monotonic() - started
                if said:
                    logger.info("kafka ready for %s after %.1f s", ", ".join(names), waited)
                return waited
            now = time.monotonic()
            if on_wait is not None:
                on_wait(reason)
            if now > deadline:
                raise KafkaNotReady(
                    f"Kafka at {bootstrap} not ready after {timeout_s:.0f} s: {reason}"
                )
            if now - said >= _SAY_EVERY_S:
                logger.info("waiting for kafka at %s: %s", bootstrap, reason)
                said = now
            time.sleep(_POLL_S)
    finally:
        consumer.close()


def _missing(consumer: Consumer, topics: list[str], group: str | None) -> str | None:
    """What is not ready yet, in words; None when everything is."""
    partitions: list[TopicPartition] = []
    for topic in topics:
        try:
            metadata = consumer.list_topics(topic, timeout=5)
        except KafkaException as exc:
            return f"no metadata ({exc.args[0].str()})"
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            error = described.error.str() if described is not None and described.error else ""
            return f"topic {topic} not there yet ({error or 'unknown'})"
        if not described.partitions:
            return f"topic {topic} has no partitions yet"
        for number, partition in sorted(described.partitions.items()):
            if partition.error is not None or partition.leader < 0:
                return f"{topic}[{number}] has no leader yet"
            partitions.append(TopicPartition(topic, number))
    for tp in partitions:
        try:
            consumer.get_watermark_offsets(tp, timeout=5)
        except KafkaException as exc:
            return f"{tp.topic}[{tp.partition}] not served yet ({exc.args[0].str()})"
    if group is not None and partitions:
        try:
            consumer.committed(partitions[:1], timeout=5)
        except KafkaException as exc:
            return f"group coordinator for {group} not ready ({exc.args[0].str()})"
    return None
