"""The origin's in-process object cache: one store read for N viewers.

    viewers ──get(key)──▶ fresh entry? ── yes ──▶ body from memory          (hit)
                              │ no
                              ▼
                        a read in flight? ── yes ──▶ wait for it             (coalesced)
                              │ no
                              ▼
                        read the store in a thread, share the result         (miss)

What an entry lives for follows the object's own Cache-Control, as its writer set it:
`immutable` objects (segments) stay until the byte-bounded LRU pushes them out; everything
else (playlists, VOD files) is served from memory for `ttl_s` only, so a burst of viewers
refreshing a live playlist costs at most one store read per TTL; `no-store` objects are never
kept. "Not found" is remembered for `negative_ttl_s`, so players racing ahead of the packager
do not hammer the store either. Store failures other than "not found" reach every waiter and
are not remembered.

The read runs as its own task: a viewer who disconnects while waiting cancels only its wait,
never the read the others share.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import ObjectNotFound, StoreError
from pipeline.metrics import Registry
from pipeline.store import ObjectInfo, ObjectStore, StoredObject

logger = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_bytes: int = 256 * MiB
    """Total bytes kept in memory (bodies plus a small charge per entry)."""
    max_object_bytes: int = 32 * MiB
    """Larger objects are read (and shared among concurrent readers) but not kept."""
    ttl_s: float = 0.5
    """How long a mutable object (a live playlist) is served from memory."""
    negative_ttl_s: float = 0.5
    """How long "not found" is remembered."""
    stale_if_error_s: float = 60.0
    """While the store fails, an expired object this recent is served instead of a 503 (a
    live playlist a few seconds old beats an error: RFC 5861's stale-if-error)."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    coalesced: int
    negative_hits: int
    store_reads: int
    evictions: int
    entries: int
    bytes: int


@dataclass(slots=True)
class _Entry:
    obj: StoredObject | None  # None: the key was not found
    expires_at: float  # math.inf for immutable objects


def is_immutable(cache_control: str) -> bool:
    return "immutable" in _directives(cache_control)


def _directives(cache_control: str) -> set[str]:
    return {part.strip().split("=", 1)[0].lower() for part in cache_control.split(",")}


class ObjectCache:
    """Async read-through cache over a synchronous `ObjectStore`."""

    def __init__(
        self,
        store: ObjectStore,
        config: CacheConfig | None = None,
        *,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.config = config or CacheConfig()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[str, asyncio.Task[StoredObject | None]] = {}
        registry = registry or Registry()
        lookups = registry.counter(
            "onair_http_cache_lookups_total",
            "Origin cache lookups by result (hit, miss, coalesced, negative_hit, too_large).",
            ("result",),
        )
        self._hits = lookups.labels("hit")
        self._misses = lookups.labels("miss")
        self._coalesced = lookups.labels("coalesced")
        self._negative_hits = lookups.labels("negative_hit")
        self._large = lookups.labels("too_large")
        self._stale_served = registry.counter(
            "onair_http_cache_stale_served_total",
            "Expired objects served because the store failed (stale-if-error).",
        )
        self._store_reads = registry.counter(
            "onair_http_cache_store_reads_total", "Object-store reads made by the origin cache."
        )
        self._evictions = registry.counter(
            "onair_http_cache_evictions_total", "Entries pushed out of the origin cache by size."
        )
        registry.gauge(
            "onair_http_cache_bytes", "Body bytes held by the origin cache."
        ).set_function(lambda: float(self._bytes))
        registry.gauge(
            "onair_http_cache_entries", "Entries held by the origin cache."
        ).set_function(lambda: float(len(self._entries)))

    def stats(self) -> CacheStats:
        return CacheStats(
            hits=int(self._hits.value),
            misses=int(self._misses.value),
            coalesced=int(self._coalesced.value),
            negative_hits=int(self._negative_hits.value),
            store_reads=int(self._store_reads.value),
            evictions=int(self._evictions.value),
            entries=len(self._entries),
            bytes=self._bytes,
        )

    async def get(self, key: str) -> StoredObject:
        """The object under `key`; raises `ObjectNotFound` (possibly remembered)."""
        entry = self._fresh(key)
        if entry is not None:
            if entry.obj is None:
                self._negative_hits.inc()
                raise ObjectNotFound(key)
            self._hits.inc()
            return entry.obj
        task = self._inflight.get(key)
        if task is None:
            self._misses.inc()
            task = asyncio.get_running_loop().create_task(self._load(key), name=f"cache:{key}")
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        else:
            self._coalesced.inc()
        obj = await asyncio.shield(task)
        if obj is None:
            raise ObjectNotFound(key)
        return obj

    def peek(self, key: str) -> StoredObject | None:
        """The object when the cache holds it fresh (a hit, counted as one), else None."""
        entry = self._fresh(key)
        if entry is None or entry.obj is None:
            return None
        self._hits.inc()
        return entry.obj

    async def get_or_head(self, key: str) -> StoredObject | ObjectInfo:
        """The object when the cache holds it or it fits the cache (read through `get`), else
        only its metadata (`head()`): the caller reads ranges of it from the store."""
        entry = self._fresh(key)
        if entry is not None or key in self._inflight:
            return await self.get(key)
        self._store_reads.inc()
        try:
            info = await asyncio.to_thread(self.store.head, key)
        except ObjectNotFound:
            self._misses.inc()
            self._keep(key, _Entry(None, self._clock() + self.config.negative_ttl_s))
            raise
        if info.size <= self.config.max_object_bytes:
            return await self.get(key)
        self._large.inc()
        return info

    def _fresh(self, key: str) -> _Entry | None:
        """The entry while it has not expired; an expired one stays (for stale-if-error)
        until it is replaced or pushed out by size."""
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= self._clock():
            return None
        self._entries.move_to_end(key)
        return entry

    def _stale(self, key: str) -> StoredObject | None:
        entry = self._entries.get(key)
        if entry is None or entry.obj is None:
            return None
        if self._clock() - entry.expires_at > self.config.stale_if_error_s:
            return None
        return entry.obj

    async def _load(self, key: str) -> StoredObject | None:
        try:
            self._store_reads.inc()
            try:
                obj = await asyncio.to_thread(self.store.get, key)
            except ObjectNotFound:
                self._keep(key, _Entry(None, self._clock() + self.config.negative_ttl_s))
                return None
            except StoreError:
                stale = self._stale(key)
                if stale is None:
                    raise
                self._stale_served.inc()
                return stale
            self._remember(obj)
            return obj
        finally:
            del self._inflight[key]

    def _remember(self, obj: StoredObject) -> None:
        size = len(obj.body)
        directives = _directives(obj.cache_control)
        if "no-store" in directives or size > self.config.max_object_bytes:
            return
        if "immutable" in directives:
            expires_at = float("inf")
        else:
            expires_at = self._clock() + self.config.ttl_s
        self._keep(obj.key, _Entry(obj, expires_at))

    def _keep(self, key: str, entry: _Entry) -> None:
        self._drop(key)
        self._entries[key] = entry
        self._bytes += _size(key, entry)
        while self._bytes > self.config.max_bytes and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self._evictions.inc()

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _size(key, entry)

    def forget_missing(self, key: str) -> None:
        """Drop a remembered "not found" for `key`: the caller knows it exists now (an
        event said so), so the next `get` reads the store instead of repeating the 404."""
        entry = self._entries.get(key)
        if entry is not None and entry.obj is None:
            self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


_ENTRY_OVERHEAD_BYTES = 256
"""Charged per entry on top of the body, so remembered misses are bounded too."""


def _size(key: str, entry: _Entry) -> int:
    body = len(entry.obj.body) if entry.obj is not None else 0
    return body + len(key) + _ENTRY_OVERHEAD_BYTES


def _retrieve(task: asyncio.Task[StoredObject | None]) -> None:
    """Mark a failed read as seen even when every waiter went away before it ended."""
    if not task.cancelled():
        task.exception()
