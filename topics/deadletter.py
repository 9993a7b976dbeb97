"""Poison events: what a role does with an event it cannot handle.

A role's handler runs through `DeadLetters.handle()`. An exception there is one of two kinds:

- **the infrastructure failed** (Kafka: a delivery, a commit, a poll): the event is fine and
  a successor will manage it, so the exception propagates, the role exits unacknowledged, and
  `onair up`'s supervisor (or Kubernetes) restarts it with backoff;
- **the object store failed** (an S3 outage): the same event is tried again with a growing
  pause (up to 8 s) for `store_patience_s` (120 s), then the role exits as above — a short
  outage costs a delay, not a crash loop. (A missing object is the event's problem, below);
- **the event fails** (anything else: a bug meeting odd data, a build that cannot finish): it
  is tried `attempts` times in all, with a short growing pause between tries; if every try
  fails, the event goes to `onair.deadletter` (a `DeadLetter` record: the group, where it came
  from, its key and value, the last error) and the role's `skip` moves past it as it moves
  past an unreadable record. One bad event no longer stops a partition for ever.

`onair status` counts what each group dead-lettered (`count_by_group`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, Message

from pipeline.errors import DeliveryFailed, ObjectNotFound, StoreError
from pipeline.metrics import Registry
from schemas.codec import Codec
from topics.client import CheckedProducer, DeliveryError
from topics.reader import read
from topics.specs import DEAD_LETTERS

logger = logging.getLogger(__name__)

# failures of what the role stands on, not of the event: never dead-lettered
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    KafkaException,
    DeliveryError,
    DeliveryFailed,
    StoreError,
    MemoryError,
)


def is_infrastructure(exc: BaseException) -> bool:
    """A missing object is the event's problem (a segment that is not there stays not there);
    every other store error is the store's."""
    return isinstance(exc, INFRASTRUCTURE_ERRORS) and not isinstance(exc, ObjectNotFound)


def is_store_outage(exc: BaseException) -> bool:
    return isinstance(exc, StoreError) and not isinstance(exc, ObjectNotFound)


class DeadLetters:
    """Runs a role's handler with retries and writes an event that keeps failing to
    `onair.deadletter`."""

    def __init__(
        self,
        group: str,
        *,
        attempts: int = 3,
        pause_s: float = 0.5,
        store_patience_s: float = 120.0,
        registry: Registry | None = None,
        codec: Codec | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.group = group
        self.attempts = attempts
        self.pause_s = pause_s
        self.store_patience_s = store_patience_s
        self._codec = codec or Codec()
        self._stop = stop or threading.Event()
        registry = registry or Registry()
        self.dead = registry.counter(
            "onair_dead_letters_total",
            "Events given up on after every attempt failed, written to onair.deadletter.",
            ("group",),
        ).labels(group)
        self.outage_waits = registry.counter(
            "onair_store_outage_retries_total",
            "Events tried again because the object store failed (an outage waited out).",
            ("group",),
        ).labels(group)
        self.retries = registry.counter(
            "onair_event_retries_total",
            "Handler attempts that failed on an event and were tried again.",
            ("group",),
        ).labels(group)

    def handle(
        self,
        msg: Message,
        producer: CheckedProducer,
        handler: Callable[[], None],
        skip: Callable[[], None],
    ) -> bool:
        """Run `handler` for `msg`; True when it succeeded, False when `msg` went to the dead
        letters through `producer` (then `skip` ran). Infrastructure errors propagate at once.
        The handler must leave nothing half-done in memory when it raises (it is run again)."""
        outage_since: float | None = None
        outage_waits = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                handler()
                return True
            except Exception as exc:
                if is_store_outage(exc):
                    # the store is down: wait it out (bounded), the same event again; this is
                    # not an attempt against the event
                    attempt -= 1
                    now = time.monotonic()
                    outage_since = now if outage_since is None else outage_since
                    if now - outage_since >= self.store_patience_s:
                        raise
                    self.outage_waits.inc()
                    logger.warning(
                        "%s: the store fails (%s); trying %s[%s]@%s again",
                        self.group,
                        exc,
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                    )
                    outage_waits += 1
                    if self._stop.wait(min(8.0, 0.5 * 2 ** (outage_waits - 1))):
                        raise
                    continue
                if is_infrastructure(exc):
                    raise
                error = f"{type(exc).__name__}: {exc}"
                if attempt < self.attempts:
                    self.retries.inc()
                    logger.warning(
                        "%s: %s[%s]@%s failed (attempt %d of %d), trying again: %s",
                        self.group,
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        attempt,
                        self.attempts,
                        error,
                    )
                    if self._stop.wait(self.pause_s * 2 ** (attempt - 1)):
                        raise
                    continue
                logger.exception(
                    "%s: %s[%s]@%s failed %d times: dead-lettered, moving on",
                    self.group,
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    self.attempts,
                )
                self.send(producer, msg, error)
                skip()
                return False

    def send(self, producer: CheckedProducer, msg: Message, error: str) -> None:
        """Write `msg` with `error` to onair.deadletter and wait for the acknowledgement (a
        failed delivery raises: the event is then neither handled nor dead-lettered, and the
        role's successor sees it again)."""
        record = {
            "group": self.group,
            "topic": msg.topic() or "",
            "partition": msg.partition() or 0,
            "offset": msg.offset() or 0,
            "key": msg.key(),
            "value": msg.value(),
            "error": error[:4000],
            "attempts": self.attempts,
            "failed_ms": int(time.time() * 1000),
        }
        producer.send(DEAD_LETTERS, self.group, self._codec.encode("DeadLetter", record))
        self.dead.inc()


def count_by_group(bootstrap: str, timeout_s: float = 10.0) -> dict[str, int]:
    """How many events each group dead-lettered (the topic read from its beginning; empty
    when the topic does not exist yet)."""
    codec = Codec()
    counts: dict[str, int] = {}
    for msg in read(bootstrap, DEAD_LETTERS, idle_timeout_s=timeout_s):
        record: dict[str, Any] = codec.expect("DeadLetter", msg.value())
        counts[record["group"]] = counts.get(record["group"], 0) + 1
    return counts
