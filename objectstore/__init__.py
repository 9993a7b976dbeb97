"""The object store's implementations with I/O beyond the standard library, and the factory.

`pipeline.store` holds the interface and the directory store (the domain may use them);
this package adds `S3Store` (boto3) and `open_store(url)`, which every entry point calls.
"""

from __future__ import annotations

from pipeline.store import LocalStore, ObjectStore


def open_store(url: str, **s3_options: str) -> ObjectStore:
    """`file:///abs/dir` or a bare path → LocalStore; `s3://bucket[/prefix]` → S3Store."""
    if url.startswith("s3://"):
        from objectstore.s3 import S3Store

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        store: ObjectStore = S3Store(bucket, prefix=prefix, **s3_options)
        return store
    return LocalStore(url.removeprefix("file://"))
