"""Which ingest holds each channel's stream, as `onair.streams` says.

The latest event per channel that moves a stream between publishers and ingests:
`StreamStarted`, `StreamInterrupted`, `StreamResumed`, `StreamEnded`. `StreamUpdated` (a title
or category change, written by the REST API, often while the stream waits out its reconnect
grace) is not one of them: read as the latest event it looked like "resumed elsewhere", so
the ingest that lost the publisher never ended the stream and no VOD was made.
"""

from __future__ import annotations

import threading
from typing import Any

OWNERSHIP_EVENTS = frozenset({"StreamStarted", "StreamInterrupted", "StreamResumed", "StreamEnded"})


class StreamOwnership:
    """Fed every `onair.streams` record (a `TableReader` listener, registered before the
    table starts so it sees the topic from its beginning)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}

    def update(self, channel: str, record: dict[str, Any] | None) -> None:
        with self._lock:
            if record is None:
                self._latest.pop(channel, None)
            elif record.get("_type") in OWNERSHIP_EVENTS:
                self._latest[channel] = record

    def get(self, channel: str) -> dict[str, Any] | None:
        with self._lock:
            return self._latest.get(channel)
