"""Where a rebuild writes: `StoreSpec` says how each worker process opens the output store
(store objects do not cross processes), `PrefixedStore` puts a store under a key prefix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from objectstore import open_store
from pipeline.store import ObjectInfo, ObjectStore, StoredObject


class PrefixedStore:
    """Another store seen through a key prefix (`rebuilds/<sid>-<time>/`)."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def put(self, key: str, body: bytes, *, content_type: str, cache_control: str) -> None:
        self.inner.put(
            self.prefix + key, body, content_type=content_type, cache_control=cache_control
        )

    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None:
        self.inner.put_file(
            self.prefix + key,
            path,
            content_type=content_type,
            cache_control=cache_control,
        )

    def get(self, key: str) -> StoredObject:
        found = self.inner.get(self.prefix + key)
        return StoredObject(key, found.body, found.content_type, found.cache_control, found.etag)

    def head(self, key: str) -> ObjectInfo:
        found = self.inner.head(self.prefix + key)
        return ObjectInfo(key, found.size, found.content_type, found.cache_control, found.etag)

    def get_range(self, key: str, first: int, last: int) -> bytes:
        return self.inner.get_range(self.prefix + key, first, last)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + key)

    def list(self, prefix: str) -> list[str]:
        return [k[len(self.prefix) :] for k in self.inner.list(self.prefix + prefix)]

    def delete(self, key: str) -> None:
        self.inner.delete(self.prefix + key)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How a worker process opens the output store (store objects do not cross processes)."""

    url: str
    options: tuple[tuple[str, str], ...] = ()
    prefix: str = ""

    def open(self) -> ObjectStore:
        options = dict(self.options) if self.url.startswith("s3://") else {}
        store = open_store(self.url, **options)
        return PrefixedStore(store, self.prefix) if self.prefix else store

    def describe(self) -> str:
        return self.url.rstrip("/") + ("/" + self.prefix.strip("/") if self.prefix else "")
