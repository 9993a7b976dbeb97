"""Rebuild's pure parts: which rungs, where the chunks are, retention, progress, prefixes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from objectstore.local import LocalStore
from pipeline.errors import NotFound
from pipeline.ladder import DEFAULT_LADDER, Ladder
from workers.rebuild.output import PrefixedStore, StoreSpec
from workers.rebuild.plan import (
    RebuildError,
    ReplayExpired,
    ReplayRange,
    check_retention,
    replay_range,
    resolve_rungs,
)
from workers.rebuild.progress import ProgressBar
from workers.vod.history import StreamHistory

LADDER = Ladder.parse(DEFAULT_LADDER)


def names(requested: list[str] | None, height: int = 720, fps: float = 30.0) -> list[str]:
    return [r.label(fps) for r in resolve_rungs(requested, LADDER, height * 16 // 9, height, fps)]


def test_default_is_the_live_ladder_rule() -> None:
    assert names(None) == ["720p30", "480p30", "360p30", "160p30"]


def test_rungs_by_name_label_or_new_with_a_bitrate_highest_first() -> None:
    assert names(["160p30", "720p30", "540p30:2000"]) == ["720p30", "540p30", "160p30"]
    rungs = resolve_rungs(["720p60"], LADDER, 1280, 720, 30.0)
    assert rungs[0].bitrate_bps == 4_500_000


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (["1080p60"], "above the source"),
        (["540p30"], "give its bitrate"),
        (["720p"], "is not HEIGHTpFPS"),
        (["360p30", "360p30:900"], "asked twice"),
    ],
    ids=["upscale", "unknown-without-bitrate", "malformed", "twice"],
)
def test_bad_rendition_requests(requested: list[str], message: str) -> None:
    with pytest.raises(RebuildError, match=message):
        names(requested)


def history(**started: Any) -> StreamHistory:
    return StreamHistory(
        "demo-20260101T000000Z-abcd",
        started={"gops_partition": 2, "gops_first_offset": 100, **started},
        ended={"gops_partition": 2, "gops_last_offset": 160, "last_sequence": 59},
    )


def test_replay_range_comes_from_start_and_end() -> None:
    assert replay_range(history()) == ReplayRange("onair.ingest.gops", 2, 100, 160, 60)


def test_replay_range_refusals() -> None:
    with pytest.raises(NotFound):
        replay_range(StreamHistory("x"))
    with pytest.raises(RebuildError, match="not ended"):
        replay_range(StreamHistory("x", started={"gops_partition": 0, "gops_first_offset": 0}))
    with pytest.raises(RebuildError, match="recorded no GOP offsets"):
        replay_range(history(gops_first_offset=-1))


def test_retention_check() -> None:
    where = ReplayRange("onair.ingest.gops", 2, 100, 160, 60)
    check_retention("s", where, low=100, high=161, retention_ms=None)
    with pytest.raises(ReplayExpired) as caught:
        check_retention("s", where, low=120, high=500, retention_ms=48 * 3_600_000)
    assert str(caught.value) == (
        "stream s can no longer be rebuilt: its GOPs (offsets 100..160 of onair.ingest.gops "
        "partition 2) fell out of retention; the partition now starts at offset 120 "
        "(onair.ingest.gops keeps 48 hours)"
    )
    with pytest.raises(ReplayExpired, match="recreated"):
        check_retention("s", where, low=0, high=150, retention_ms=None)


def test_progress_bar_lines_every_tenth_off_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar("rebuild s", 20, out, width=10)
    for done in range(21):
        bar.update(done, done * 2.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[-1].startswith("rebuild s [##########] 20/20 GOPs, 40 s of media")
    assert bar.text(10, 20.0, 2.0).endswith("10/20 GOPs, 20 s of media, 10.0x real time, ETA 2 s")


def test_prefixed_store_and_spec(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path)
    store = PrefixedStore(inner, "rebuilds/x/")
    store.put("vod/a/master.m3u8", b"#EXTM3U\n", content_type="t", cache_control="c")
    assert inner.exists("rebuilds/x/vod/a/master.m3u8")
    assert store.list("vod/") == ["vod/a/master.m3u8"]
    assert store.get("vod/a/master.m3u8").key == "vod/a/master.m3u8"
    spec = StoreSpec(str(tmp_path), prefix="rebuilds/x")
    assert spec.open().exists("vod/a/master.m3u8")
    assert spec.describe() == f"{tmp_path}/rebuilds/x"
