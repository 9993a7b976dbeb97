"""The chat replay's schedule (gateway/http/static/replay.js) under node: which windows of
chat it fetches as the playback position moves, and exactly which messages the panel shows
after each move (play, pause, seek back, seek forward, a request held or failing), against a
fake history API that answers like `GET /api/chat/<channel>` (tests/unit/http/replay_run.cjs).
Its media timeline is checked against the VOD worker's own (workers/vod/timeline.py) on a
playlist rendered by the worker's code and read the way hls.js reads it."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from workers.vod.playlists import vod_media_playlist
from workers.vod.timeline import SegmentSet, Timeline

RUNNER = Path(__file__).with_name("replay_run.cjs")
T0 = 1_700_000_000_000  # the first frame's wall time (ms)


def run_node(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (the player's JavaScript is tested with it)")
    proc = subprocess.run(
        [node, str(RUNNER)],
        input=json.dumps(scenarios),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def message(ident: str, ts: int) -> dict[str, Any]:
    return {"type": "message", "id": ident, "channel": "c", "user": "u", "text": ident, "ts": ts}


def at(seconds: float) -> int:
    return T0 + round(seconds * 1000)


# One run of 100 s, windows of 30 s: [0, 30) [30, 60) [60, 90) [90, 100].
OFFSETS = {
    "a": 0.5, "b": 3, "c": 10, "d": 29.9, "e": 30.0, "f": 31, "g": 45,
    "h": 59.999, "i": 61, "j": 75, "k": 95, "l": 99.5,
}  # fmt: skip
MESSAGES = [
    message("early", T0 - 3_000),  # before the stream went live: never asked for
    message("lead", T0 - 1_000),  # live, before the first frame: shown at 0
    *(message(ident, at(s)) for ident, s in OFFSETS.items()),
    message("late", at(101)),  # after the last frame: never asked for
]
MEDIA_AT = {"lead": 0.0, **OFFSETS}
ONE_RUN = {"runs": [{"startS": 0, "endS": 100, "wallMs": T0}]}
OPTIONS = {"windowS": 30, "startedMs": T0 - 2_000, "maxLines": 100}
WINDOW = [(T0 - 2_000, at(30) - 1), (at(30), at(60) - 1), (at(60), at(90) - 1), (at(90), at(100))]


def up_to(position: float) -> list[str]:
    """What a panel shows at `position` when all chat before it is loaded."""
    return [i for i, s in sorted(MEDIA_AT.items(), key=lambda kv: kv[1]) if s <= position]


def fetched(*windows: int) -> list[list[int]]:
    return [[*WINDOW[k], 1000] for k in windows]


def scenario(steps: list[list[Any]], **changes: Any) -> dict[str, Any]:
    base = {"timeline": ONE_RUN, "options": OPTIONS, "messages": MESSAGES, "steps": steps}
    return {**base, **changes}


def test_play_pause_and_seeks_show_exactly_the_messages_up_to_the_position() -> None:
    steps = [["at", 0], ["at", 12], ["at", 12], ["at", 70], ["at", 20], ["at", 30], ["at", 99.9]]
    (result,) = run_node([scenario(steps)])
    shown = [step["visible"] for step in result["steps"]]
    assert shown == [
        up_to(0),  # ["lead"]: chat between going live and the first frame shows at 0
        up_to(12),
        up_to(12),  # paused: nothing new
        up_to(70),  # seek forward: filled in
        up_to(20),  # seek back: exactly the messages up to the new position
        up_to(30),  # a message exactly at the position is shown
        up_to(99.9),
    ]
    assert "early" not in shown[-1] and "late" not in shown[-1]
    # windowed: the current one and the next first, then more only as the position needs
    assert [step["fetches"] for step in result["steps"]] == [
        fetched(0, 1),
        [],
        [],
        fetched(2, 3),
        [],
        [],
        [],
    ]
    assert all(step["settled"] for step in result["steps"])


def test_a_deep_seek_shows_no_chat_from_before_a_hole_then_fills_in_going_back() -> None:
    (result,) = run_node([scenario([["at", 95], ["at", 50]])])
    deep, back = result["steps"]
    assert deep["fetches"] == fetched(3, 2)
    assert deep["visible"] == ["i", "j", "k"]  # windows 2 and 3 only: 0 and 1 are not loaded
    assert back["fetches"] == fetched(1, 0)
    assert back["visible"] == up_to(50)


def test_a_window_in_flight_shows_nothing_until_it_lands() -> None:
    steps: list[list[Any]] = [["hold"], ["at", 40], ["release"]]
    (result,) = run_node([scenario(steps)])
    _hold, waiting, landed = result["steps"]
    assert waiting["fetches"] == fetched(1, 0)  # two at a time, the position's own first
    assert waiting["visible"] == [] and not waiting["settled"]
    assert landed["fetches"] == fetched(2)  # the prefetch once a slot is free
    assert landed["visible"] == up_to(40) and landed["settled"]


def test_a_failed_window_is_asked_again_after_a_backoff() -> None:
    steps: list[list[Any]] = [["fail", 1], ["at", 5], ["clock", 1_000], ["clock", 2_500]]
    (result,) = run_node([scenario(steps)])
    _fail, failed, early, retried = result["steps"]
    assert failed["fetches"] == fetched(0, 1) and failed["loaded"] == [1]
    assert failed["visible"] == []
    assert early["fetches"] == []  # 2 s backoff not over
    assert retried["fetches"] == fetched(0)
    assert retried["visible"] == up_to(5)


def test_pages_within_a_window_are_followed_and_deduplicated() -> None:
    crowd = [message(f"m{n}", at(10 + n // 3)) for n in range(12)]  # three per second
    steps = [["at", 29]]
    (result,) = run_node([scenario(steps, messages=crowd, options={**OPTIONS, "pageLimit": 4})])
    (step,) = result["steps"]
    assert step["visible"] == [f"m{n}" for n in range(12)]
    first = [f for f in step["fetches"] if f[1] == WINDOW[0][1]]
    assert len(first) == 4  # pages of 4, each from the last one's newest ts (repeated, dropped)
    assert all(WINDOW[0][0] <= f[0] <= f[1] == WINDOW[0][1] and f[2] == 4 for f in first)


def test_the_panel_keeps_the_newest_lines() -> None:
    (result,) = run_node([scenario([["at", 70]], options={**OPTIONS, "maxLines": 3})])
    assert result["steps"][0]["visible"] == up_to(70)[-3:]


def test_memory_is_bounded_and_windows_come_back_when_needed() -> None:
    runs = {"runs": [{"startS": 0, "endS": 300, "wallMs": T0}]}
    chat = [message(f"s{s}", at(s)) for s in range(0, 300, 10)]
    path = [["at", s] for s in range(0, 300, 20)] + [["at", 15]]
    options = {**OPTIONS, "keepWindows": 4}
    (result,) = run_node([scenario(path, timeline=runs, messages=chat, options=options)])
    assert max(len(step["loaded"]) for step in result["steps"]) <= 4
    assert result["steps"][-1]["visible"] == ["s0", "s10"]
    assert result["steps"][-1]["fetches"]  # window 0 was dropped on the way and fetched again


def test_a_break_in_the_stream_maps_chat_to_the_run_it_waited_for() -> None:
    # run 1: media 0-20 s = wall T0..T0+20 s; the streamer is away 10 s; run 2: media 20-40 s
    gap = {
        "runs": [
            {"startS": 0, "endS": 20, "wallMs": T0},
            {"startS": 20, "endS": 40, "wallMs": at(30)},
        ]
    }
    chat = [message("x", at(5)), message("away", at(25)), message("y", at(35))]
    steps = [["at", 19.9], ["at", 20], ["at", 24.9], ["at", 25]]
    options = {**OPTIONS, "windowS": 10}
    (result,) = run_node([scenario(steps, timeline=gap, messages=chat, options=options)])
    assert [step["visible"] for step in result["steps"]] == [
        ["x"],
        ["x", "away"],  # sent while away: shown where the stream came back
        ["x", "away"],
        ["x", "away", "y"],
    ]
    ranges = {tuple(f[:2]) for step in result["steps"] for f in step["fetches"]}
    assert (at(10), at(30) - 1) in ranges  # the window across the break covers the gap


# ---- the media timeline: the same as the VOD worker's -----------------------------------------


def segment_set(plan: list[tuple[int, int]]) -> SegmentSet:
    """`plan`: (duration_ms, gap_ms before it) per segment; a gap > 0 is a reconnect."""
    segments = SegmentSet("s-1")
    wall, pts = T0, 900_000
    for sequence, (duration_ms, gap_ms) in enumerate(plan):
        wall += gap_ms
        segments.add(
            {
                "stream_id": "s-1",
                "rendition": "360p30",
                "renditions": ["360p30"],
                "sequence": sequence,
                "duration_90k": duration_ms * 90,
                "start_pts_90k": pts + gap_ms * 90,
                "discontinuity": gap_ms > 0,
                "program_date_time_ms": wall,
                "size_bytes": 1000,
                "height": 360,
                "end_of_stream": False,
            }
        )
        wall += duration_ms
        pts += (duration_ms + gap_ms) * 90
    return segments


def hls_fragments(playlist: str) -> list[dict[str, Any]]:
    """A media playlist's fragments as hls.js's parser leaves them: start, duration, the
    date-time carried forward from the last EXT-X-PROGRAM-DATE-TIME, the discontinuity count."""
    fragments: list[dict[str, Any]] = []
    start, cc, pending, duration = 0.0, 0, None, 0.0
    for line in playlist.splitlines():
        if line == "#EXT-X-DISCONTINUITY":
            cc += 1
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            moment = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00"))
            pending = round(moment.timestamp() * 1000)
        elif line.startswith("#EXTINF:"):
            duration = float(line.removeprefix("#EXTINF:").rstrip(","))
        elif line and not line.startswith("#"):
            if pending is None:
                last = fragments[-1]
                pending = last["programDateTime"] + last["duration"] * 1000
            fragments.append(
                {"start": start, "duration": duration, "programDateTime": pending, "cc": cc}
            )
            start += duration
            pending = None
    return fragments


def test_the_timeline_is_the_vod_workers_own() -> None:
    plan = [(2000, 0)] * 5 + [(1500, 7000)] + [(2000, 0)] * 4 + [(2000, 30_000), (1000, 0)]
    timeline = Timeline.build(segment_set(plan), ["360p30"])
    fragments = hls_fragments(vod_media_playlist(timeline, "360p30"))
    total_s = timeline.total_90k / 90_000
    walls = list(range(T0 - 2_000, T0 + 70_000, 250))
    medias = [n / 4 for n in range(int(total_s * 4) + 1)]
    (result,) = run_node([{"timeline": {"fragments": fragments}, "walls": walls, "medias": medias}])
    assert len(result["runs"]) == len(timeline.runs()) == 3
    for wall, media in zip(walls, result["mediaOf"], strict=True):
        assert media == pytest.approx(timeline.offset_of_wall(wall) / 90_000, abs=1e-6), wall
    for media, wall in zip(medias, result["wallAt"], strict=True):
        assert wall == pytest.approx(timeline.wall_at(round(media * 90_000)), abs=1), media


def test_the_timeline_is_the_playlists_whichever_fragments_hls_js_has_parsed() -> None:
    """hls.js moves a loaded fragment's `start` and `duration` to its parsed PTS (after a
    discontinuity, 21 ms late here: one AAC frame of priming); `playlistOffset` keeps the
    playlist's place. The runs are the same before, during and after loading."""
    plan = [(2000, 0)] * 10 + [(2000, 10_000)] + [(2000, 0)] * 9
    timeline = Timeline.build(segment_set(plan), ["360p30"])
    listed = hls_fragments(vod_media_playlist(timeline, "360p30"))
    for fragment in listed:  # what hls.js keeps of the playlist beside what it rewrites
        fragment["playlistOffset"] = fragment["start"]
        fragment["tagList"] = [["INF", f"{fragment['duration']:.3f}"]]
    scenarios = []
    for parsed in (set(), {10}, {9, 10, 11}, set(range(len(listed)))):
        fragments = [dict(f) for f in listed]
        for n in parsed:  # the media 21 ms late, its last audio frame a little longer
            fragments[n]["start"] += 0.021 if fragments[n]["cc"] else 0.0
            fragments[n]["duration"] += 0.005
        scenarios.append({"timeline": {"fragments": fragments}})
    results = run_node(scenarios)
    expected = [
        {"startS": 0.0, "endS": 20.0, "wallMs": T0},
        {"startS": 20.0, "endS": 40.0, "wallMs": T0 + 30_000},
    ]
    for result in results:
        assert result["runs"] == [pytest.approx(run) for run in expected]


# ---- any path: never a future message, never a hole, the backlog complete --------------------


def random_scenario(rng: random.Random) -> tuple[dict[str, Any], dict[str, float]]:
    plan = [(rng.choice([2000, 1500, 2500]), 0) for _ in range(rng.randint(10, 60))]
    for _ in range(rng.randint(0, 2)):
        plan[rng.randrange(1, len(plan))] = (2000, rng.randint(1_000, 40_000))
    timeline = Timeline.build(segment_set(plan), ["360p30"])
    end_wall = timeline.wall_at(timeline.total_90k) + 1
    chat, media_at = [], {}
    for n in range(rng.randint(0, 120)):
        ts = rng.randint(T0, end_wall - 1)
        chat.append(message(f"m{n}", ts))
        media_at[f"m{n}"] = timeline.offset_of_wall(ts) / 90_000
    total_s = timeline.total_90k / 90_000
    steps: list[list[Any]] = []
    position = 0.0
    for _ in range(12):
        if rng.random() < 0.4:
            position = rng.uniform(0, total_s)  # a seek anywhere
        else:
            position = min(total_s, position + rng.uniform(0, 6))  # playing on
        steps.append(["at", round(position, 3)])
    window_s = rng.choice([10, 20, 30])
    options = {"windowS": window_s, "maxLines": rng.choice([5, 50]), "keepWindows": 4}
    fragments = hls_fragments(vod_media_playlist(timeline, "360p30"))
    away_ms = sum(gap for _duration, gap in plan)
    case = {
        "timeline": {"fragments": fragments},
        "options": options,
        "messages": chat,
        "steps": steps,
        "away_ms": away_ms,
    }
    return case, media_at


@pytest.mark.parametrize("seed", range(3))
def test_any_path_shows_a_complete_suffix_of_the_chat_up_to_the_position(seed: int) -> None:
    rng = random.Random(seed)
    cases = [random_scenario(rng) for _ in range(25)]
    results = run_node([case for case, _ in cases])
    for (case, media_at), result in zip(cases, results, strict=True):
        window_s = case["options"]["windowS"]
        away_ms = case["away_ms"]
        max_lines = case["options"]["maxLines"]
        sent = {m["id"]: m["ts"] for m in case["messages"]}
        order = sorted(media_at, key=lambda i: (media_at[i], sent[i], int(i[1:])))
        for step, outcome in zip(case["steps"], result["steps"], strict=True):
            position = step[1]
            past = [i for i in order if media_at[i] <= position + 1e-9]
            shown = outcome["visible"]
            assert outcome["settled"]
            assert shown == past[len(past) - len(shown) :], "a hole or a future message"
            backlog = [i for i in past if media_at[i] >= (position // window_s - 1) * window_s]
            assert len(shown) >= min(max_lines, len(backlog)), "the backlog is incomplete"
            for since, until, _limit in outcome["fetches"]:
                assert until - since <= window_s * 1000 + away_ms  # a window (and breaks)
