"""The live spool: while a stream is live, `Prefetcher` copies its segments (CMAF with their
init segments, or MPEG-TS) into a local `SegmentSpool` as they are announced, so the
end-of-stream work reads local files instead of the whole stream from the store (the spool
is only a cache: anything missing is fetched).

The prefetcher's reading is a `topics.follower.Follower` (`vod-prefetch`): a failed poll
restarts it where its last batch ended; `prefetcher.follower.probe` goes to the worker's
`Health`."""

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

from confluent_kafka import Message

from pipeline.errors import CodecError, ObjectNotFound
from pipeline.metrics import Registry
from pipeline.store import ObjectStore
from schemas.codec import Codec
from topics.follower import Follower
from topics.reader import END
from topics.specs import SEGMENTS

logger = logging.getLogger(__name__)


class SegmentSpool:
    """Local copies of a live stream's objects under their store keys: `<root>/<key>`, keys
    such as `streams/<stream_id>/<rendition>/000042.m4s` (see pipeline/keys.py)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a store key: {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, body: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def drop(self, stream_id: str) -> None:
        shutil.rmtree(self.root / "streams" / stream_id, ignore_errors=True)

    def sweep(self, max_age_s: float) -> None:
        """Forget streams whose spool has not changed for `max_age_s` (never ended here), and
        anything else as old under the root (an earlier layout's folders)."""
        cutoff = time.time() - max_age_s
        streams = self.root / "streams"
        children = [c for c in self.root.iterdir() if c != streams]
        if streams.is_dir():
            children += list(streams.iterdir())
        for child in children:
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
        self.store = store
        self.spool = spool
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vod-prefetch")
        self._slots = threading.BoundedSemaphore(workers * 4)
        self._codec = Codec()
        registry = registry or Registry()
        self.fetched = registry.counter(
            "onair_vod_prefetched_segments_total", "Live segments copied to the VOD spool."
        )
        self.follower = Follower(
            "vod-prefetch", bootstrap, topic, self._take_batch, start=END, registry=registry
        )

    def want(self, stream_id: str) -> None:
        with self._lock:
            self._wanted.add(stream_id)

    def forget(self, stream_id: str) -> None:
        with self._lock:
            self._wanted.discard(stream_id)

    def start(self) -> None:
        """Follow every partition from its end; returns at once."""
        self.follower.start()

    def _take_batch(self, batch: list[Message]) -> None:
        for msg in batch:
            self._take(msg)

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
        """The segment in the format the VOD will read: CMAF (and its init segment, once)
        when it was written, MPEG-TS otherwise."""
        if record.get("cmaf_key") and record.get("init_key"):
            keys = [record["cmaf_key"]]
            if not self.spool.has(record["init_key"]):
                keys.append(record["init_key"])
        else:
            keys = [record["key"]]
        for key in keys:
            try:
                self.spool.put(key, self.store.get(key).body)
                self.fetched.inc()
            except ObjectNotFound:  # not in this store: another platform's stream
                logger.debug("vod prefetch: %s not found", key)
            except Exception as exc:
                logger.warning("vod prefetch of %s failed: %s", key, exc)

    def stop(self) -> None:
        self.follower.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
