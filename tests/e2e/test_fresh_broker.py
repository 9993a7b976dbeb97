"""Every role against a broker that was formatted a moment ago, as on a newcomer's machine.

Each test starts a single-node KRaft broker of its own (`infra/kafka scratch-start`, own ports,
storage formatted anew) and runs the roles against it at once: no topic has a leader yet, the
group coordinator's `__consumer_offsets` does not exist, the packager's changelog topics are
still to be made. The roles must wait for what they need (saying so on `/healthz`), never crash, and
package the first stream completely.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, Platform, free_port, parse_media_playlist, wait_port
from tests.mediafixtures import probe_frames

pytestmark = pytest.mark.e2e

STREAM_S = 16
EXPECTED = ["720p30", "480p30", "360p30", "160p30"]


def _port_range(count: int) -> int:
    """The first of `count` consecutive free loopback ports (for `onair up`'s roles)."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65000:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


@pytest.fixture
def new_broker(tmp_path: Path) -> Iterator[str]:
    """A broker formatted now, on ports of its own → its bootstrap."""
    home = tmp_path / "kafka"
    port, controller = free_port(), free_port()
    infra = str(ROOT / "infra" / "kafka")
    started = subprocess.run(
        [
            infra,
            "scratch-start",
            str(home),
            "--port",
            str(port),
            "--controller-port",
            str(controller),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"localhost:{port}"
    finally:
        subprocess.run([infra, "scratch-stop", str(home)], capture_output=True, timeout=120)


def test_roles_say_starting_until_they_consume(tmp_path: Path, new_broker: str) -> None:
    """Started before any topic exists, each worker role's /healthz answers 503 "starting"
    with what it waits for; once the topics are created, each turns 200 by itself."""
    platform = Platform(tmp_path, ONAIR_KAFKA_BOOTSTRAP=new_broker)
    roles = {
        "ingest": ("ingest",),
        "package": ("package",),
        "vod": ("vod",),
        "transcode-360p30": ("transcode", "--rendition", "360p30"),
    }
    try:
        for name, args in roles.items():
            platform.start(name, *args)
        deadline = time.monotonic() + 60
        waiting: dict[str, str] = {}
        while len(waiting) < len(roles) and time.monotonic() < deadline:
            for name in roles:
                status, body = platform.health(name)
                if status:
                    assert status == 503, (name, status, body)
                    waiting[name] = body
            time.sleep(0.2)
        assert set(waiting) == set(roles), waiting
        for name, body in waiting.items():
            assert body.startswith("starting: "), (name, body)
        # still no topics: for 3 s, checked all along, no role turns ready and none dies
        # (there is no event to wait on for something that must not happen)
        watch_until = time.monotonic() + 3
        while time.monotonic() < watch_until:
            for name in roles:
                assert platform.health(name)[0] == 503, name
                assert platform.procs[name].poll() is None, platform.log_tail(name)

        platform.cli("topics")
        platform.wait_healthy(*roles, timeout_s=90)
        for name in roles:
            assert platform.procs[name].poll() is None, platform.log_tail(name)
    finally:
        platform.stop()


def test_onair_up_on_a_new_broker_packages_the_first_stream(
    tmp_path: Path, new_broker: str
) -> None:
    """`onair up` a moment after the broker was formatted: it says when every role is ready,
    no role crashes, and the first stream is packaged completely in every rendition."""
    base = _port_range(9 + 5)
    platform = Platform(
        tmp_path,
        ONAIR_KAFKA_BOOTSTRAP=new_broker,
        ONAIR_UP_METRICS_PORT_BASE=str(base),
        ONAIR_PLAYLIST_WINDOW="100",
        ONAIR_RECONNECT_GRACE_S="1",
    )
    up = platform.start("up", "up")
    try:
        log = platform.logs / "up.log"
        deadline = time.monotonic() + 180
        while "onair is ready" not in log.read_text(errors="replace"):
            assert up.poll() is None, platform.log_tail("up")
            assert time.monotonic() < deadline, "onair up never said ready\n" + _logs(platform)
            time.sleep(0.3)
        wait_port(platform.rtmp_port)
        key = (Path(platform.env["ONAIR_STATE_DIR"]) / "demo.key").read_text().strip()

        streamer = platform.publish(key, STREAM_S)
        assert streamer.wait(STREAM_S + 60) == 0, Path(platform.last_publish_log).read_text()

        texts: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            texts = {
                r: (platform.get_or_none(f"/live/demo/{r}/index.m3u8") or b"").decode()
                for r in EXPECTED
            }
            if all(t and parse_media_playlist(t)["ended"] for t in texts.values()):
                break
            time.sleep(1)
        for rendition in EXPECTED:
            assert texts[rendition], f"{rendition}: no playlist\n{_logs(platform)}"
            info = parse_media_playlist(texts[rendition])
            assert info["ended"], f"{rendition} never ended\n{_logs(platform)}"
            sequences = [int(s["uri"].rsplit("/", 1)[1][:-3]) for s in info["segments"]]
            assert sequences == list(range(len(sequences))), (rendition, sequences)
            total = sum(s["duration"] for s in info["segments"])
            assert abs(total - STREAM_S) <= info["target_duration"], (rendition, total)
        counts = {r: len(parse_media_playlist(t)["segments"]) for r, t in texts.items()}
        assert len(set(counts.values())) == 1, counts

        last = parse_media_playlist(texts["160p30"])["segments"][-1]["uri"]
        path = tmp_path / "last.ts"
        path.write_bytes(platform.get(f"/live/demo/160p30/{last}"))
        frames = probe_frames(path)
        assert frames and frames[0]["key_frame"] == 1

        output = log.read_text(errors="replace")
        assert "restarting" not in output, "a role crashed on the new broker\n" + _logs(platform)
    finally:
        platform.stop()


def _logs(platform: Platform) -> str:
    state_logs = Path(platform.env["ONAIR_STATE_DIR"]) / "logs"
    parts = [f"--- up\n{platform.log_tail('up')}"]
    for path in sorted(state_logs.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-25:]
        parts.append(f"--- {path.stem}\n" + "\n".join(lines))
    return "\n".join(parts)
