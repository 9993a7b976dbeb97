"""A VOD's chat replay in a real browser, on the real Kafka, S3 and `onair http`.

ffmpeg renders 40 s of test pattern into 2 s MPEG-TS segments; they are stored under
`streams/<stream_id>/180p30/` and the VOD's playlists are written by the VOD worker's own
code with a break in the middle (the streamer was away 10 s after 20 s of media: the second
run has its own PROGRAM-DATE-TIME), and a `Vod` record goes to `onair.vods`. Chat messages
with chosen `sent_ms` go to `onair.chat` for a channel of the test's own; one of them is
deleted through the moderation API. Headless Chromium (playwright-core,
`tests/e2e/chat_replay_check.mjs`) opens `/watch/vod/<stream_id>`, seeks to 30 s: the panel
shows exactly the messages of the first 30 s of media minus the deleted one (chat sent while
the streamer was away shows at 20 s, where the stream came back); paused, nothing new comes;
back at 10 s it shows exactly those up to 10 s; playing on from 30 s, the message at 33 s
appears when playback passes 33 s.

The history API finds records by the broker's LogAppendTime (`gateway/chat/history.py`,
5 s of skew allowed), so the stream is placed 39 s in the past: every record, appended now,
is within the skew of both 30 s windows the replay asks for.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.chat.partitioner import PARTITIONER
from objectstore import open_store
from pipeline.channels import new_stream_id
from pipeline.settings import Settings
from schemas.codec import Codec
from tests.e2e.hls_site import REPO, SEGMENT_CC, require_tools
from tests.harness import Platform
from topics.client import CheckedProducer
from topics.specs import CHAT, VODS
from workers.vod.builder import VodBuilder
from workers.vod.timeline import SegmentSet, Timeline

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.e2e

CHECK_SCRIPT = Path(__file__).with_name("chat_replay_check.mjs")
ADMIN_TOKEN = "e2e-replay-admin"
RENDITION = "180p30"
SEGMENT_S = 2
SEGMENTS = 20
BREAK_AFTER = 10  # segments before the streamer was away
AWAY_MS = 10_000
PLACED_MS = 39_000  # how long before now the first frame is placed
SEEK_S, BACK_S = 30, 10

# (id, media offset s, text); "lead" was sent after going live, before the first frame;
# "away" while the streamer was away (wall time just after media 20 s + 5 s)
CHAT_PLAN = [
    ("lead", None, "first!"),
    ("m02", 2.0, "hello"),
    ("m07", 7.5, "<b>not bold</b> & <img src=x onerror=alert(1)>"),
    ("m12", 12.0, "this one gets deleted"),
    ("m16", 16.0, "sixteen"),
    ("away", None, "where did you go?"),
    ("m24", 24.0, "back again"),
    ("m29", 29.0, "twenty-nine"),
    ("m33", 33.0, "thirty-three"),
    ("m37", 37.0, "thirty-seven"),
]
DELETED = "m12"
SHOWN_AT = {"lead": 0.0, "away": 20.0}  # where the panel puts what has no media offset


def render_segments(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(SEGMENT_S * SEGMENTS),
        "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main", "-level", "3.0",
        "-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
        "-b:v", "300k", "-c:a", "aac", "-b:a", "64k", "-ac", "2",
        "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_list_size", "0",
        "-hls_playlist_type", "vod", "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out / "%06d.ts"), str(out / "index.m3u8"),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    segments = sorted(out.glob("*.ts"))
    assert len(segments) == SEGMENTS, segments
    return segments


def wall_of(media_s: float, first_frame_ms: int) -> int:
    """The wall time of a media offset: the second run starts AWAY_MS later."""
    away = AWAY_MS if media_s >= BREAK_AFTER * SEGMENT_S else 0
    return first_frame_ms + round(media_s * 1000) + away


def timeline_of(stream_id: str, channel: str, first_frame_ms: int) -> Timeline:
    """The SegmentReady records a transcode worker would have produced for these segments."""
    segments = SegmentSet(stream_id)
    for sequence in range(SEGMENTS):
        media_s = sequence * SEGMENT_S
        segments.add(
            {
                "stream_id": stream_id,
                "channel": channel,
                "rendition": RENDITION,
                "renditions": [RENDITION],
                "sequence": sequence,
                "duration_90k": SEGMENT_S * 90_000,
                "start_pts_90k": 126_000 + media_s * 90_000,
                "discontinuity": sequence == BREAK_AFTER,
                "program_date_time_ms": wall_of(media_s, first_frame_ms),
                "size_bytes": 75_000,
                "width": 320,
                "height": 180,
                "fps": 30.0,
                "codecs": "avc1.4d401e,mp4a.40.2",
                "end_of_stream": False,
            }
        )
    return Timeline.build(segments, [RENDITION])


@dataclass
class ReplayVod:
    platform: Platform
    channel: str
    stream_id: str
    first_frame_ms: int
    ids: dict[str, str]  # CHAT_PLAN's id → the message's id in this run
    shown: dict[str, float]  # CHAT_PLAN's id → media offset the panel shows it at


@pytest.fixture
def vod(tmp_path: Path, kafka_bootstrap: str) -> Iterator[ReplayVod]:
    require_tools("chat replay")
    segments = render_segments(tmp_path / "ffmpeg")
    platform = Platform(tmp_path, ONAIR_ADMIN_TOKEN=ADMIN_TOKEN)
    try:
        platform.cli("topics")
        settings = Settings.from_env(platform.env)
        store = open_store(settings.storage_url, **settings.s3_options())
        channel = f"e2e_replay_{uuid.uuid4().hex[:8]}"
        codec = Codec()
        first_frame_ms = int(time.time() * 1000) - PLACED_MS
        started_ms = first_frame_ms - 1_500
        stream_id = new_stream_id(channel, started_ms)
        for sequence, path in enumerate(segments):
            store.put(
                f"streams/{stream_id}/{RENDITION}/{sequence:06d}.ts",
                path.read_bytes(),
                content_type="video/mp2t",
                cache_control=SEGMENT_CC,
            )
        timeline = timeline_of(stream_id, channel, first_frame_ms)
        master = VodBuilder(store).write_playlists(stream_id, timeline, [])
        vod_record = {
            "stream_id": stream_id,
            "channel": channel,
            "started_ms": started_ms,
            "ended_ms": wall_of(SEGMENT_S * SEGMENTS, first_frame_ms) + 1_000,
            "duration_ms": timeline.total_ms,
            "renditions": [RENDITION],
            "segment_count": SEGMENTS,
            "master": master,
        }
        producer = CheckedProducer(kafka_bootstrap, partitioner=PARTITIONER)
        producer.produce(VODS, stream_id, codec.encode("Vod", vod_record))
        sent = {
            "lead": started_ms + 500,
            "away": wall_of(BREAK_AFTER * SEGMENT_S, first_frame_ms) - AWAY_MS // 2,
        }
        ids = {ident: f"{ident}-{uuid.uuid4().hex[:6]}" for ident, _, _ in CHAT_PLAN}
        for ident, media_s, text in CHAT_PLAN:
            at_ms = sent[ident] if media_s is None else wall_of(media_s, first_frame_ms)
            record = {
                "id": ids[ident],
                "channel": channel,
                "user": f"viewer_{ident}",
                "text": text,
                "sent_ms": at_ms,
                "server": "e2e",
            }
            producer.produce(CHAT, channel, codec.encode("ChatMessage", record))
        producer.flush()
        platform.start("http", "http")
        platform.wait_healthy("http", timeout_s=60)
        yield ReplayVod(
            platform,
            channel,
            stream_id,
            first_frame_ms,
            ids,
            {ident: SHOWN_AT.get(ident, media_s or 0.0) for ident, media_s, _ in CHAT_PLAN},
        )
    finally:
        platform.stop()


def test_vod_page_replays_the_chat_at_its_offsets_through_seeks_and_pauses(
    vod: ReplayVod,
) -> None:
    ids = vod.ids
    with httpx.Client(base_url=vod.platform.url(""), timeout=10) as http:
        deleted = http.post(
            f"/api/moderation/{vod.channel}/delete",
            json={"message_id": ids[DELETED]},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert deleted.status_code == 200, deleted.text

    cmd = [
        "node", str(CHECK_SCRIPT),
        "--url", vod.platform.url(f"/watch/vod/{vod.stream_id}"),
        "--seek", str(SEEK_S), "--back", str(BACK_S), "--next-id", ids["m33"],
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert proc.stdout.strip(), f"no output from chat_replay_check.mjs: {proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, json.dumps(result, indent=2)
    logger.info("chat replay result: %s", json.dumps(result))

    def expected(position: float) -> list[str]:
        kept = [(at, n, i) for n, (i, at) in enumerate(vod.shown.items()) if i != DELETED]
        return [ids[i] for at, _n, i in sorted(kept) if at <= position]

    assert result["pageStatus"] == 200
    assert result["finalUrl"].endswith(f"/vod/{vod.stream_id}")  # /watch/vod/ redirects
    assert result["origin"] == "playlist"  # media time 0 = the first PROGRAM-DATE-TIME
    assert len(result["runs"]) == 2  # the break starts a second run at its own date-time
    assert result["chrome"] == {"mode": "replay", "title": "Chat replay", "inputs": 0}

    at_seek = result["atSeek"]
    assert at_seek["paused"] and at_seek["ids"] == expected(SEEK_S)
    assert at_seek["at"] == pytest.approx([vod.shown[i.rsplit("-", 1)[0]] for i in at_seek["ids"]])
    texts = dict(zip(at_seek["ids"], at_seek["texts"], strict=True))
    assert texts[ids["m07"]] == CHAT_PLAN[2][2]  # shown as text, never parsed
    assert at_seek["elementsInTexts"] == 0
    assert result["paused"]["ids"] == expected(SEEK_S)  # paused: nothing new
    assert result["atBack"]["ids"] == expected(BACK_S)  # seek back: exactly up to there
    assert result["beforePlay"]["ids"] == expected(SEEK_S)  # seek forward: filled in again
    assert 33.0 <= result["nextShownAt"] <= 34.0  # appears as playback passes its offset
    assert result["afterNext"]["ids"][-1] == ids["m33"]

    # fetched in windows of the media timeline, never the whole stream at once
    assert result["chatRequests"]
    for url in result["chatRequests"]:
        query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
        assert int(query["until"]) - int(query["since"]) < 30_000 + 1_500 + AWAY_MS
    assert result["failedRequests"] == []
    assert not [line for line in result["console"] if line.startswith(("pageerror", "error"))]
