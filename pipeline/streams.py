"""Which streams are on air, from the latest `onair.streams` event per channel. Pure: the
callers (the REST API, `onair status`) pass a snapshot of the lifecycle table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ON_AIR_EVENTS = frozenset({"StreamStarted", "StreamResumed", "StreamUpdated", "StreamInterrupted"})


def live_streams(latest: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The latest event of every channel that is on air (interrupted streams count: they wait
    out their reconnect grace), without the table's `_type` key."""
    return [
        {k: v for k, v in record.items() if k != "_type"}
        for record in latest.values()
        if record.get("_type") in ON_AIR_EVENTS
    ]
