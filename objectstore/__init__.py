"""The object store: `LocalStore` (a directory, `local.py`), `S3Store` (boto3, `s3.py`) and
`open_store(url)`, which every entry point calls. The interface they implement is
`pipeline.store.ObjectStore`."""

from __future__ import annotations

from objectstore.local import LocalStore
from pipeline.store import ObjectStore

__all__ = ["LocalStore", "open_store"]


def open_store(url: str, **s3_options: str) -> ObjectStore:
    """`file:///abs/dir` or a bare path → LocalStore; `s3://bucket[/prefix]` → S3Store."""
    if url.startswith("s3://"):
        from objectstore.s3 import S3Store

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        store: ObjectStore = S3Store(bucket, prefix=prefix, **s3_options)
        return store
    return LocalStore(url.removeprefix("file://"))
