"""live_streams: on air while started, resumed, updated or in its reconnect grace."""

from __future__ import annotations

import pytest

from pipeline.streams import live_streams


@pytest.mark.parametrize(
    ("kind", "live"),
    [
        ("StreamStarted", True),
        ("StreamResumed", True),
        ("StreamUpdated", True),
        ("StreamInterrupted", True),
        ("StreamEnded", False),
    ],
    ids=["started", "resumed", "updated", "interrupted", "ended"],
)
def test_on_air_by_latest_event(kind: str, live: bool) -> None:
    latest = {"demo": {"_type": kind, "channel": "demo", "stream_id": "demo-1"}}
    expected = [{"channel": "demo", "stream_id": "demo-1"}] if live else []
    assert live_streams(latest) == expected
