"""The player's ABR in a real browser on a throttled network: onair's controller settles below
1 Mb/s when the link is 1 Mb/s, with at most one stall, and climbs again when it is fast.

ffmpeg renders a test pattern into a four-rung ladder of 2 s MPEG-TS segments whose rates
straddle 1 Mb/s (≈ 2.2, 1.2, 0.65 and 0.35 Mb/s on the wire, audio included); a publisher
thread lays them out in a LocalStore as the packager does and grows the live playlists by one
segment every 2 s; the gateway app serves them under uvicorn (tests/e2e/hls_site.py, shared
with test_player.py). Headless Chromium (driven by tests/e2e/abr_check.mjs with
playwright-core) opens `/watch/<channel>`, lets the player climb at full speed, throttles the
page to 1 Mb/s through the DevTools protocol (`Network.emulateNetworkConditions`), then lifts
the throttle, and reports every fragment it loaded (level, when, under which phase) and every
stall. A last visit with `?abr=hlsjs` checks that hls.js's own controller can still be picked.
"""

from __future__ import annotations

import contextlib
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

CHECK_SCRIPT = Path(__file__).with_name("abr_check.mjs")
CHANNEL = "abr"
STREAM_ID = "abr-e2e-0001"
SEGMENT_S = 2
SECONDS = 110
WINDOW = 6
THROTTLE_BPS = 1_000_000
CODECS = "avc1.4d401f,mp4a.40.2"  # Main@3.1 (720p needs 3.1) + AAC-LC

RUNGS = (
    Rung("720p30", 1280, 720, 2000),
    Rung("480p30", 854, 480, 1000),
    Rung("360p30", 640, 360, 500),
    Rung("240p30", 426, 240, 250),
)
LADDER = Ladder(CHANNEL, STREAM_ID, RUNGS, CODECS, SEGMENT_S, WINDOW, name_variants=True)


@contextlib.contextmanager
def live_ladder(workdir: Path) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    """Serve the growing live ladder; yields the gateway's base URL and each rung's
    (peak, average) advertised bitrate."""
    store = LocalStore(workdir / "store")
    started = time.monotonic()
    # four aligned renditions, 2 s GOPs, cut into 2 s MPEG-TS segments by ffmpeg
    renditions = render_ladder(
        workdir / "ffmpeg",
        RUNGS,
        seconds=SECONDS,
        segment_s=SEGMENT_S,
        level="3.1",
        min_segments=50,
        timeout_s=600,
    )
    publisher = LivePublisher(store, renditions, LADDER, name="abr-live-publisher")
    publisher.prepare()
    logger.info("rendered and stored the ladder in %.1f s", time.monotonic() - started)
    with serve_live(store, publisher) as url:
        yield url, publisher.bandwidths()


def run_check(base_url: str) -> dict[str, object]:
    cmd = [
        "node", str(CHECK_SCRIPT), "--url", f"{base_url}/watch/{CHANNEL}",
        "--throttle-bps", str(THROTTLE_BPS), "--timeout-seconds", "150",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.stdout.strip(), f"no output from abr_check.mjs: {proc.stderr}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, json.dumps(result, indent=2)
    return result


@pytest.fixture
def ladder(tmp_path: Path) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    require_tools("player")
    with live_ladder(tmp_path) as served:
        yield served


def check(result: dict[str, object]) -> None:
    """The assertions, apart from the fixture so a developer can run them on a saved result."""
    assert result["mode"] == "hls.js" and result["abr"] == "onair"
    levels = result["levels"]
    assert isinstance(levels, list) and len(levels) == len(RUNGS)
    bitrates = [int(level["bitrate"]) for level in levels]
    frags = result["fragments"]
    assert isinstance(frags, list)
    by_phase = {
        phase: [f for f in frags if f["phase"] == phase] for phase in ("fast", "slow", "again")
    }
    top = len(bitrates) - 1

    # At full speed it climbs to the top rung.
    assert any(f["level"] == top for f in by_phase["fast"]), by_phase["fast"]

    # At 1 Mb/s: settled on a rung advertised below 1 Mb/s within a few segments (every
    # fragment from the fourth on), and at most one stall.
    slow = by_phase["slow"]
    assert len(slow) >= 8, slow
    assert all(bitrates[f["level"]] < THROTTLE_BPS for f in slow[3:]), slow
    assert result["stallsWhileThrottled"] <= 1, result["stalls"]
    settled = slow[-1]["level"]

    # Back at full speed it climbs above where it settled.
    again = by_phase["again"]
    assert any(f["level"] > settled for f in again), again

    # The stats overlay (opened with ?stats=1) showed the rung, estimate, buffer and latency.
    text = str(result["statsText"])
    assert "onair" in text and "Mb/s" in text and "Buffer" in text and "Latency" in text, text
    stats = result["statsWhileThrottled"]
    assert isinstance(stats, dict)
    assert stats["abr"] == "onair" and 0 < stats["bandwidthBps"] < 1.5 * THROTTLE_BPS, stats

    # ?abr=hlsjs picks hls.js's own controller.
    assert result["hlsjsMode"] == {"abr": "hlsjs", "onairController": False}
    assert result["failedRequests"] == []
    console = result["console"]
    assert isinstance(console, list)
    assert not [line for line in console if line.startswith(("pageerror", "error"))]


def test_player_settles_below_a_throttled_link_and_climbs_back(
    ladder: tuple[str, dict[str, tuple[int, int]]],
) -> None:
    base_url, bandwidths = ladder
    logger.info("advertised (peak, average) bits/s: %s", bandwidths)
    result = run_check(base_url)
    logger.info("abr result: %s", json.dumps(result))
    check(result)
