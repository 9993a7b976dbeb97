"""The object store: where segments and playlists live.

The interface (`ObjectStore`), key checks, and `LocalStore` (a directory, the embedded
default); `objectstore.s3.S3Store` (boto3, any S3-compatible server) is the other
implementation, and `objectstore.open_store(url)` picks one. Both pass one contract suite
(`tests/store_contract.py`). Keys are `/`-separated relative paths such as
`streams/<stream_id>/720p30/000001.ts`. Writes are atomic: a reader sees the whole old
object or the whole new one, never a part. Large objects (a VOD's MP4) are read in ranges:
`head()` gives the size and ETag, `get_range()` the bytes of one inclusive span. Both stores
are synchronous; async callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.errors import ObjectNotFound, StoreError

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


def _etag(body: bytes) -> str:
    import hashlib

    return hashlib.md5(body, usedforsecurity=False).hexdigest()


class LocalStore:
    """A directory. Metadata (content type, cache control) sits in a sidecar `.meta` file
    written before the object is renamed into place, so a visible object has its metadata."""

    _META = ".meta"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, body: bytes, *, content_type: str, cache_control: str) -> None:
        path = self._path(key)
        if path.name.endswith(self._META):
            raise StoreError(f"invalid object key {key!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = f"{content_type}\n{cache_control}\n".encode()
        self._atomic_write(path.with_name(path.name + self._META), meta)
        self._atomic_write(path, body)

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            body = path.read_bytes()
            meta = path.with_name(path.name + self._META).read_text().split("\n")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return StoredObject(key, body, meta[0], meta[1], _etag(body))

    def head(self, key: str) -> ObjectInfo:
        """Size and metadata; the ETag is the body's MD5 (as `get` gives it, and S3 for a
        single PUT), hashed in blocks so a large object is never held whole."""
        import hashlib

        path = self._path(key)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            meta = path.with_name(path.name + self._META).read_text().split("\n")
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                while block := handle.read(1024 * 1024):
                    digest.update(block)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return ObjectInfo(key, size, meta[0], meta[1], digest.hexdigest())

    def get_range(self, key: str, first: int, last: int) -> bytes:
        """Bytes `first..last` (inclusive); StoreError when `first` is past the end."""
        check_range(key, first, last)
        try:
            with self._path(key).open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if first >= size:
                    raise StoreError(f"range {first}-{last} outside {key!r} ({size} bytes)")
                handle.seek(first)
                return handle.read(min(last, size - 1) - first + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for path in self._walk():
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                keys.append(key)
        return sorted(keys)

    def _walk(self) -> Iterator[Path]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.endswith(self._META) and not name.startswith(".tmp-"):
                    yield Path(dirpath) / name

    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None:
        """Write a large local file (read once; a directory store has no parts to stream)."""
        self.put(key, path.read_bytes(), content_type=content_type, cache_control=cache_control)

    def delete(self, key: str) -> None:
        path = self._path(key)
        for victim in (path, path.with_name(path.name + self._META)):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()


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
