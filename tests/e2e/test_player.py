"""A real browser watches a real live HLS stream through the gateway.

ffmpeg renders a test pattern into three renditions of MPEG-TS segments; a publisher thread
lays them out in a LocalStore exactly as the packager does (segments under
`streams/<stream_id>/<rendition>/`, sliding-window media playlists and a master under
`live/<channel>/`), adding one segment per segment duration so the player has to follow a
moving live edge; the app runs under uvicorn; headless Chromium (Debian's package, driven by
playwright-core from `tests/e2e/player_check.mjs`) opens `/watch/<channel>`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from objectstore.local import LocalStore
from tests.e2e.hls_site import (
    REPO,
    Ladder,
    LivePublisher,
    Rung,
    render_ladder,
    require_tools,
    serve_live,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.e2e

CHECK_SCRIPT = Path(__file__).with_name("player_check.mjs")
CHANNEL = "demo"
STREAM_ID = "demo-e2e-0001"
SEGMENT_S = 1
SECONDS = 16
WINDOW = 6
CODECS = "avc1.4d401e,mp4a.40.2"  # Main@3.0 (forced below) + AAC-LC

RUNGS = (
    Rung("360p30", 640, 360, 700),
    Rung("240p30", 426, 240, 350),
    Rung("144p30", 256, 144, 150),
)
LADDER = Ladder(CHANNEL, STREAM_ID, RUNGS, CODECS, SEGMENT_S, WINDOW)


def render_renditions(out: Path) -> dict[str, list[tuple[Path, float]]]:
    """Three aligned renditions, 1 s GOPs, cut into 1 s MPEG-TS segments by ffmpeg's HLS muxer."""
    return render_ladder(
        out,
        RUNGS,
        seconds=SECONDS,
        segment_s=SEGMENT_S,
        level="3.0",
        min_segments=10,
        timeout_s=120,
    )


@pytest.fixture
def gateway_url(tmp_path: Path) -> Iterator[str]:
    require_tools("player")
    store = LocalStore(tmp_path / "store")
    started = time.monotonic()
    publisher = LivePublisher(
        store, render_renditions(tmp_path / "ffmpeg"), LADDER, name="live-publisher"
    )
    publisher.prepare()
    logger.info("rendered and stored in %.1f s", time.monotonic() - started)
    with serve_live(store, publisher) as url:
        yield url


def test_browser_plays_live_stream_and_lists_qualities(gateway_url: str) -> None:
    cmd = [
        "node", str(CHECK_SCRIPT), "--url", f"{gateway_url}/watch/{CHANNEL}",
        "--min-levels", "2", "--play-seconds", "2", "--timeout-seconds", "30",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert proc.stdout.strip(), f"no output from player_check.mjs: {proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, json.dumps(result, indent=2)
    logger.info("player result: %s", json.dumps(result))

    assert result["pageStatus"] == 200
    assert result["mode"] == "hls.js"
    heights = sorted(level["height"] for level in result["levels"])
    assert heights == sorted(r.height for r in RUNGS)
    assert result["currentTime"] >= result["firstCurrentTime"] + 2

    # The selector lists Auto and every level, highest first, named by height.
    options = result["beforeSwitch"]["options"]
    assert options[0] == {"value": "-1", "text": "Auto"}
    assert [o["text"] for o in options[1:]] == [f"{r.height}p" for r in RUNGS]
    assert result["beforeSwitch"]["currentLevelText"].startswith("Auto (")
    assert result["beforeSwitch"]["liveEdgeHidden"] is False

    # Pinning a level from the selector switched playback to it, and it kept playing.
    after = result["afterSwitch"]
    pinned = result["levels"][result["pinnedLevel"]]
    assert after["currentLevel"] == result["pinnedLevel"]
    assert after["currentLevelText"] == f"{pinned['height']}p"
    assert after["autoLevelEnabled"] is False
    assert result["afterAuto"]["autoLevelEnabled"] is True

    # Behind on purpose after a pause, not before it; back to live with the LIVE button.
    assert result["heldAtStart"] is False
    assert result["heldAfterPause"] is True
    assert result["heldAfterLive"] is False
    assert result["failedRequests"] == []
    assert not [line for line in result["console"] if line.startswith(("pageerror", "error"))]
