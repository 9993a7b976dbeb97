"""A compacted topic read into a dict and followed: channels, moderation, VOD catalog.

`start()` reads from the beginning to the current end (so a restarted process knows every
channel before it accepts a publish), then a `topics.follower.Follower` keeps following: a
failed poll or listener restarts its consumer where the last batch ended (attach
`table.follower.probe` to the role's `Health`). Records that fail to decode are skipped and
counted; a tombstone (null value) deletes the key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from pipeline.errors import CodecError
from pipeline.metrics import Registry
from schemas.codec import Codec
from topics.follower import Follower
from topics.reader import BEGINNING
from topics.ready import wait_for_topics

logger = logging.getLogger(__name__)


class TableReader:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        record: str | None,
        codec: Codec | None = None,
        *,
        registry: Registry | None = None,
        name: str | None = None,
    ) -> None:
        """`record`: the record type every value must have; None → any type, kept with its
        type name under the key `"_type"` (e.g. the lifecycle events of `onair.streams`).
        `name` labels the follower's metrics and health (default `table:<topic>`)."""
        self.topic = topic
        self.record = record
        self._codec = codec or Codec()
        self._bootstrap = bootstrap
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = threading.Condition()
        self.skipped = 0
        self.listeners: list[Callable[[str, dict[str, Any] | None], None]] = []
        self.follower = Follower(
            name or f"table:{topic}",
            bootstrap,
            topic,
            self._apply_batch,
            start=BEGINNING,
            registry=registry,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Read the topic to its end (within `timeout` once the broker serves it), then
        follow it in the background."""
        wait_for_topics(self._bootstrap, [self.topic])
        self.follower.start()
        if not self.follower.wait_caught_up(timeout):
            error = self.follower.last_error
            self.follower.stop()
            why = f" (last error: {error})" if error else ""
            raise TimeoutError(f"could not read {self.topic} to its end in {timeout}s{why}")

    def _apply_batch(self, messages: list[Message]) -> None:
        for msg in messages:
            self._apply(msg.key(), msg.value())

    def _apply(self, raw_key: bytes | None, value: bytes | None) -> None:
        key = (raw_key or b"").decode("utf-8", "replace")
        record: dict[str, Any] | None = None
        if value is not None:
            try:
                if self.record is None:
                    name, record = self._codec.decode(value)
                    record["_type"] = name
                else:
                    record = self._codec.expect(self.record, value)
            except CodecError as exc:
                self.skipped += 1
                logger.warning("skipped a record in %s: %s", self.topic, exc)
                return
        with self._lock:
            if record is None:
                self._data.pop(key, None)
            else:
                self._data[key] = record
            self._lock.notify_all()
        for listener in self.listeners:
            listener(key, record)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._data.get(key)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._data)

    def wait_for(
        self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float
    ) -> bool:
        """Block until `predicate(data)` holds (e.g. our own write came back)."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self._data), timeout)

    def stop(self) -> None:
        self.follower.stop()
