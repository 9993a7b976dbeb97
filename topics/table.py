"""A compacted topic read into a dict and followed: channels, moderation, VOD catalog.

`start()` reads from the beginning to the current end (so a restarted process knows every
channel before it accepts a publish), then a background thread keeps following. Records that
fail to decode are skipped and counted; a tombstone (null value) deletes the key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from pipeline.errors import CodecError
from schemas.codec import Codec
from topics.client import make_consumer, poll_checked
from topics.ready import wait_for_topics

logger = logging.getLogger(__name__)


class TableReader:
    def __init__(
        self, bootstrap: str, topic: str, record: str | None, codec: Codec | None = None
    ) -> None:
        """`record`: the record type every value must have; None → any type, kept with its
        type name under the key `"_type"` (e.g. the lifecycle events of `onair.streams`)."""
        self.topic = topic
        self.record = record
        self._codec = codec or Codec()
        self._bootstrap = bootstrap
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.skipped = 0
        self.listeners: list[Callable[[str, dict[str, Any] | None], None]] = []

    def start(self, timeout: float = 30.0) -> None:
        """Read the topic to its end (within `timeout` once the broker serves it), then
        follow it in the background."""
        wait_for_topics(self._bootstrap, [self.topic])
        eof: dict[str, Any] = {"enable.partition.eof": True}
        consumer = make_consumer(self._bootstrap, None, **eof)
        metadata = consumer.list_topics(self.topic, timeout=timeout).topics[self.topic]
        if metadata.error is not None:
            consumer.close()
            raise RuntimeError(f"topic {self.topic}: {metadata.error}")
        partitions = [TopicPartition(self.topic, p, 0) for p in sorted(metadata.partitions)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout)[1] for tp in partitions}
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout
        caught_up = {p for p, end in ends.items() if end == 0}
        while len(caught_up) < len(partitions):
            if time.monotonic() > deadline:
                consumer.close()
                raise TimeoutError(f"could not read {self.topic} to its end in {timeout}s")
            msg = poll_checked(consumer, 0.2)
            if msg is None:
                continue
            self._apply(msg.key(), msg.value())
            if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                caught_up.add(msg.partition() or 0)
        self._thread = threading.Thread(
            target=self._follow, args=(consumer,), name=f"table-{self.topic}", daemon=True
        )
        self._thread.start()

    def _follow(self, consumer: Any) -> None:
        try:
            while not self._stop.is_set():
                msg = poll_checked(consumer, 0.2)
                if msg is not None:
                    self._apply(msg.key(), msg.value())
        except Exception:
            logger.exception("table %s stopped following", self.topic)
        finally:
            consumer.close()

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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
