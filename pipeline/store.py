"""The object store's interface: where segments and playlists live.

`ObjectStore` (the protocol every role is written against), the stored-object types, key
and range checks, and content types. The implementations live in the `objectstore` package
(`local.py` a directory, `s3.py` any S3-compatible server, `open_store(url)` picks one);
the interface stays in the domain because the domain's own code is typed against it. Both
implementations pass one contract suite
(`tests/store_contract.py`). Keys are `/`-separated relative paths such as
`streams/<stream_id>/720p30/000001.ts`. Writes are atomic: a reader sees the whole old
object or the whole new one, never a part. Large objects (a VOD's MP4) are read in ranges:
`head()` gives the size and ETag, `get_range()` the bytes of one inclusive span. Both stores
are synchronous; async callers run them in a thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.errors import StoreError

_KEY = re.compile(r"(?!/)(?!.*//)[A-Za-z0-9._\-/]{1,512}")


def check_key(key: str) -> str:
    """Refuse keys that could escape the store or are not plain relative paths."""
    if not _KEY.fullmatch(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    body: bytes
    content_type: str
    cache_control: str
    etag: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's metadata without its body (`head()`)."""

    key: str
    size: int
    content_type: str
    cache_control: str
    etag: str


class ObjectStore(Protocol):
    def put(self, key: str, body: bytes, *, content_type: str, cache_control: str) -> None: ...
    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None: ...
    def get(self, key: str) -> StoredObject: ...
    def head(self, key: str) -> ObjectInfo: ...
    def get_range(self, key: str, first: int, last: int) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...


def check_range(key: str, first: int, last: int) -> None:
    """`first..last` inclusive, as HTTP ranges count; `last` past the end reads to the end."""
    if first < 0 or last < first:
        raise StoreError(f"invalid byte range {first}-{last} of {key!r}")


CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".vtt": "text/vtt",
    ".jpg": "image/jpeg",
    ".json": "application/json",
}


def content_type_for(key: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(key)[1], "application/octet-stream")
