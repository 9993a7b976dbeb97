"""The channel directory: `onair.channels` (compacted, keyed by channel name) read into memory.

Creating a channel or rotating its key produces a new `Channel` record holding only the key's
hash; the plaintext key is returned once to the caller and never stored or logged.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from pipeline.channels import check_channel_name, hash_stream_key, new_stream_key
from pipeline.errors import NotFound, OnairError
from pipeline.metrics import Registry
from schemas.codec import Codec
from topics.client import CheckedProducer
from topics.specs import CHANNELS
from topics.table import TableReader

logger = logging.getLogger(__name__)


class ChannelExists(OnairError):
    pass


class ChannelDirectory:
    def __init__(
        self, bootstrap: str, codec: Codec | None = None, *, registry: Registry | None = None
    ) -> None:
        """`registry`: where the table's follower reports (`table.follower` is what a role's
        `Health` watches)."""
        self._codec = codec or Codec()
        self._bootstrap = bootstrap
        self.table = TableReader(bootstrap, CHANNELS, "Channel", self._codec, registry=registry)
        self._producer: CheckedProducer | None = None

    def start(self) -> None:
        self.table.start()

    def stop(self) -> None:
        self.table.stop()

    def get(self, name: str) -> dict[str, Any] | None:
        return self.table.get(name)

    def names(self) -> list[str]:
        return sorted(self.table.snapshot())

    def find_by_key(self, stream_key: str) -> str | None:
        """The channel whose key this is, or None. Compares hashes in constant time."""
        presented = hash_stream_key(stream_key)
        found = None
        for name, record in self.table.snapshot().items():
            if hmac.compare_digest(presented, record["stream_key_hash"]):
                found = name
        return found

    def create(self, name: str, *, exist_ok: bool = False) -> str | None:
        """→ the new stream key; None when the channel exists and `exist_ok`."""
        check_channel_name(name)
        if self.get(name) is not None:
            if exist_ok:
                return None
            raise ChannelExists(f"channel {name} already exists")
        return self._write(name, key_version=1, created_ms=None)

    def rotate_key(self, name: str) -> str:
        current = self.get(name)
        if current is None:
            raise NotFound(f"no channel {name}")
        return self._write(name, current["key_version"] + 1, current["created_ms"], current)

    def update_info(self, name: str, title: str | None, category: str | None) -> dict[str, Any]:
        """Set the channel's title and category (the key stays as it is)."""
        current = self.get(name)
        if current is None:
            raise NotFound(f"no channel {name}")
        record = {
            **current,
            "title": title,
            "category": category,
            "updated_ms": int(time.time() * 1000),
        }
        self._send(name, record)
        return record

    def _send(self, name: str, record: dict[str, Any]) -> None:
        if self._producer is None:
            self._producer = CheckedProducer(self._bootstrap)
        self._producer.send(CHANNELS, name, self._codec.encode("Channel", record))

    def _write(
        self,
        name: str,
        key_version: int,
        created_ms: int | None,
        previous: dict[str, Any] | None = None,
    ) -> str:
        key = new_stream_key()
        now = int(time.time() * 1000)
        record = {
            "name": name,
            "stream_key_hash": hash_stream_key(key),
            "key_version": key_version,
            "created_ms": created_ms or now,
            "updated_ms": now,
            "title": (previous or {}).get("title"),
            "category": (previous or {}).get("category"),
        }
        self._send(name, record)
        self.table.wait_for(
            lambda data: data.get(name, {}).get("key_version") == key_version, timeout=10
        )
        logger.info("channel %s: stream key version %d issued", name, key_version)
        return key
