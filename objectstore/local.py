"""The directory store: an `ObjectStore` in a local directory (the embedded default and the
tests' store). Writes are atomic (a temporary file renamed into place, metadata first)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import ObjectNotFound, StoreError
from pipeline.store import ObjectInfo, StoredObject, check_key, check_range


def _etag(body: bytes) -> str:
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
        # the ETag is written beside the object, so head() need not hash a large one again
        meta = f"{content_type}\n{cache_control}\n{_etag(body)}\n".encode()
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

    @staticmethod
    def _hash_file(path: Path) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            while block := handle.read(1024 * 1024):
                digest.update(block)
        return digest.hexdigest()

    def head(self, key: str) -> ObjectInfo:
        """Size and metadata; the ETag is the body's MD5 (as `get` gives it, and S3 for a
        single PUT), as recorded when the object was written (hashed in blocks for an object
        written before the store recorded it)."""
        path = self._path(key)
        try:
            meta = path.with_name(path.name + self._META).read_text().split("\n")
            size = path.stat().st_size
            etag = meta[2] if len(meta) > 2 and meta[2] else self._hash_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return ObjectInfo(key, size, meta[0], meta[1], etag)

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
