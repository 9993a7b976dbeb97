"""Low-latency HLS playlists from PartReady records (pipeline/llhls.py), checked by the
independent checker in tests/llcheck.py (the `m3u8` parser plus the spec's rules)."""

from __future__ import annotations

from typing import Any

import m3u8
import pytest

from pipeline.llhls import LlConfig, LlRendition, LlVariant, render_master, render_media
from tests.llcheck import check_ll_media

CONFIG = LlConfig(part_target_s=0.5, target_duration_s=2)
PART_90K = 45_000
PARTS = 4  # a 2 s segment in 0.5 s parts


def record(sequence: int, part: int, **extra: Any) -> dict[str, Any]:
    last = part == PARTS - 1
    folder = "streams/s1/360p30"
    return {
        "stream_id": "s1", "channel": "c", "rendition": "360p30", "renditions": ["360p30"],
        "sequence": sequence, "part": part, "key": f"{folder}/{sequence:06d}.{part}.m4s",
        "init_key": f"{folder}/init-a.mp4", "start_pts_90k": 0, "duration_90k": PART_90K,
        "independent": part == 0, "discontinuity": False,
        "program_date_time_ms": 1_790_000_000_000 + 2000 * sequence, "ingest_time_ms": 0,
        "last": last, "segment_key": f"{folder}/{sequence:06d}.m4s" if last else "",
        "segment_duration_90k": PARTS * PART_90K if last else 0,
        "bitrate_bps": 800_000 if last else 0, "width": 640, "height": 360, "fps": 30.0,
        "codecs": "avc1.64001e,mp4a.40.2", "end_of_stream": False, **extra,
    }  # fmt: skip


def feed(rendition: LlRendition, upto: tuple[int, int], start: int = 0) -> None:
    for sequence in range(start, upto[0] + 1):
        for part in range(PARTS):
            if (sequence, part) > upto:
                return
            rendition.add(record(sequence, part))


def render(rendition: LlRendition, *others: LlRendition, skip: bool = False) -> str:
    return render_media(
        rendition,
        [rendition, *others],
        CONFIG,
        uri=lambda key: "/".join(key.split("/")[1::2]),  # streams/s1/360p30/x → s1/x
        report_uri=lambda name: f"../{name}/ll.m3u8",
        skip=skip,
    )


def test_a_live_playlist_lists_parts_of_the_last_three_targets_and_hints_the_next() -> None:
    rendition, other = LlRendition("360p30", window=10), LlRendition("720p30")
    feed(rendition, (12, 1))
    feed(other, (12, 2))
    text = render(rendition, other)
    checked = check_ll_media(text, others=["720p30"])
    assert (checked.last_msn, checked.last_part) == (12, 1)
    assert checked.playlist.media_sequence == 2  # the newest 10 complete segments: 2..11
    with_parts = [s for s in checked.playlist.segments if s.parts]
    # every segment that overlaps the last three target durations (6 s) has its parts
    assert [s.uri for s in with_parts] == ["s1/000009.m4s", "s1/000010.m4s", "s1/000011.m4s", None]
    assert checked.playlist.preload_hint.uri == "s1/000012.2.m4s"
    report = checked.playlist.rendition_reports[0]
    assert (report.uri, report.last_msn, report.last_part) == ("../720p30/ll.m3u8", 12, 2)


def test_the_first_parts_of_a_stream_are_listed_before_any_segment_completes() -> None:
    rendition = LlRendition("360p30")
    feed(rendition, (0, 1))
    checked = check_ll_media(render(rendition))
    assert (checked.last_msn, checked.last_part) == (0, 1)
    assert checked.playlist.preload_hint.uri == "s1/000000.2.m4s"


def test_blocking_conditions_follow_what_is_listed() -> None:
    rendition = LlRendition("360p30")
    assert not rendition.has(0, 0) and rendition.next_part() is None
    feed(rendition, (3, 2))
    assert rendition.has(3, 2) and rendition.has(2, 9) and not rendition.has(3, 3)
    assert rendition.has(2, None) and not rendition.has(3, None)
    assert rendition.next_part() == (3, 3)
    rendition.add(record(3, 3))
    assert rendition.has(3, None) and rendition.next_part() == (4, 0)


def test_repeats_are_ignored_and_an_early_part_waits_for_the_one_before() -> None:
    rendition = LlRendition("360p30")
    feed(rendition, (1, 1))
    version = rendition.version
    assert not rendition.add(record(1, 0)) and not rendition.add(record(0, 3))
    assert not rendition.add(record(1, 3))  # held: part 2 has not come
    assert rendition.version == version and rendition.last_part == 1
    assert rendition.add(record(1, 2))
    assert (rendition.last_msn, rendition.last_part) == (1, 3) and rendition.segments[-1].complete


def test_a_segment_completes_by_its_last_part_announced_again() -> None:
    rendition = LlRendition("360p30")
    feed(rendition, (0, 3))
    rendition.add(record(1, 0))
    for part in (1, 2, 3):  # the GOP ended right after part 3: it went out without `last`
        rendition.add(record(1, part, last=False, segment_key=""))
    assert rendition.current is not None and not rendition.has(1, None)
    assert rendition.add(record(1, 3))  # the same part again, now with `last`
    assert rendition.has(1, None) and rendition.segments[-1].uri.endswith("000001.m4s")
    assert not rendition.add(record(1, 3))  # and a third time is a repeat
    check_ll_media(render(rendition))


def test_a_segment_that_never_completes_is_dropped_and_the_next_is_a_discontinuity() -> None:
    rendition = LlRendition("360p30")
    feed(rendition, (2, 3))
    rendition.add(record(3, 0))
    rendition.add(record(3, 1))  # GOP 3 fails on this rung after two parts
    feed(rendition, (5, 0), start=4)
    assert [s.sequence for s in rendition.segments] == [0, 1, 2, 4]
    assert rendition.segments[-1].discontinuity
    text = render(rendition)
    check_ll_media(text)
    assert "000003" not in text and text.count("#EXT-X-DISCONTINUITY\n") == 1


def test_the_end_of_the_stream_ends_the_playlist() -> None:
    rendition = LlRendition("360p30")
    feed(rendition, (2, 1))
    rendition.add(record(3, 0, end_of_stream=True))
    text = render(rendition)
    check_ll_media(text, ended=True)
    assert "PRELOAD-HINT" not in text and "000002.0" not in text
    assert rendition.has(7, 3) and rendition.has(3, None)


@pytest.mark.parametrize("skip", [False, True], ids=["full", "delta"])
def test_a_delta_update_skips_what_is_older_than_can_skip_until(skip: bool) -> None:
    rendition = LlRendition("360p30", window=30)
    feed(rendition, (20, 1))
    full = m3u8.loads(render(rendition))
    text = render(rendition, skip=skip)
    checked = check_ll_media(text)
    assert (checked.last_msn, checked.last_part) == (20, 1)
    skipped = getattr(checked.playlist.skip, "skipped_segments", 0)
    if not skip:
        assert not skipped
        return
    # 12 s (6 targets) of media stays listed: 20 complete segments of 2 s, the last 6 kept
    assert skipped == 14
    kept = [s.uri for s in checked.playlist.segments]
    assert [s.uri for s in full.segments][skipped:] == kept


def test_the_master_lists_every_rendition_with_its_codecs() -> None:
    low, high = LlRendition("360p30"), LlRendition("720p30")
    feed(low, (1, 3))
    feed(high, (1, 3))
    high.peak_bps = 3_000_000
    text = render_master([LlVariant("360p30/ll.m3u8", low), LlVariant("720p30/ll.m3u8", high)])
    master = m3u8.loads(text)
    assert [p.uri for p in master.playlists] == ["720p30/ll.m3u8", "360p30/ll.m3u8"]
    assert master.playlists[1].stream_info.codecs == "avc1.64001e,mp4a.40.2"
    assert master.playlists[1].stream_info.bandwidth == 800_000
