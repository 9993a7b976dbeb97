"""The live spool: while a stream is live, `Prefetcher` copies its segments into a local
`SegmentSpool` as they are announced, so the end-of-stream work reads local files instead of
the whole stream from the store (the spool is only a cache: anything missing is fetched)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.errors import CodecError, ObjectNotFound
from pipeline.metrics import Registry
from pipeline.store import ObjectStore
from schemas.codec import Codec
from topics.client import OFFSET_END, make_consumer, poll_checked
from topics.specs import SEGMENTS

logger = logging.getLogger(__name__)


class SegmentSpool:
    """Local copies of live segments, `<root>/<stream_id>/<rendition>/<seq>.ts`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stream_id: str, rendition: str, sequence: int) -> Path:
        return self.root / stream_id / rendition / f"{sequence:06d}.ts"

    def put(self, stream_id: str, rendition: str, sequence: int, body: bytes) -> None:
        path = self.path(stream_id, rendition, sequence)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)

    def get(self, stream_id: str, rendition: str, sequence: int) -> bytes | None:
        try:
            return self.path(stream_id, rendition, sequence).read_bytes()
        except FileNotFoundError:
            return None

    def drop(self, stream_id: str) -> None:
        shutil.rmtree(self.root / stream_id, ignore_errors=True)

    def sweep(self, max_age_s: float) -> None:
        """Forget streams whose spool has not changed for `max_age_s` (never ended here)."""
        cutoff = time.time() - max_age_s
        for child in self.root.iterdir():
            with contextlib.suppress(OSError):
                if child.is_dir() and child.stat().st_mtime < cutoff:
                    shutil.rmtree(child, ignore_errors=True)


class Prefetcher:
    """Follows onair.segments from its end and copies the segments of the streams it is told
    about (`want`) into the spool, a few at a time in threads."""

    def __init__(
        self,
        bootstrap: str,
        store: ObjectStore,
        spool: SegmentSpool,
        *,
        topic: str = SEGMENTS,
        workers: int = 4,
        registry: Registry | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.store = store
        self.spool = spool
        self.topic = topic
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vod-prefetch")
        self._slots = threading.BoundedSemaphore(workers * 4)
        self._thread: threading.Thread | None = None
        self._codec = Codec()
        self.fetched = (registry or Registry()).counter(
            "onair_vod_prefetched_segments_total", "Live segments copied to the VOD spool."
        )

    def want(self, stream_id: str) -> None:
        with self._lock:
            self._wanted.add(stream_id)

    def forget(self, stream_id: str) -> None:
        with self._lock:
            self._wanted.discard(stream_id)

    def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None)
        metadata = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in metadata.partitions])
        self._thread = threading.Thread(
            target=self._follow, args=(consumer,), name="vod-prefetch", daemon=True
        )
        self._thread.start()

    def _follow(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg = poll_checked(consumer, 0.2)
                if msg is not None:
                    self._take(msg)
        except Exception:  # the spool is an optimisation: the worker goes on without it
            logger.exception("vod prefetch stopped")
        finally:
            consumer.close()

    def _take(self, msg: Message) -> None:
        key = (msg.key() or b"").decode("utf-8", "replace")
        with self._lock:
            if key not in self._wanted:
                return
        try:
            record = self._codec.expect("SegmentReady", msg.value())
        except CodecError:
            return
        if record["end_of_stream"] or not record["key"]:
            return
        self._slots.acquire()
        self._pool.submit(self._fetch, record).add_done_callback(lambda _: self._slots.release())

    def _fetch(self, record: dict[str, Any]) -> None:
        try:
            body = self.store.get(record["key"]).body
            self.spool.put(record["stream_id"], record["rendition"], record["sequence"], body)
            self.fetched.inc()
        except ObjectNotFound:  # not in this store: another platform's stream
            logger.debug("vod prefetch: %s not found", record["key"])
        except Exception as exc:
            logger.warning("vod prefetch of %s failed: %s", record["key"], exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)
