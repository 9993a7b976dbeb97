"""Run onair's roles as real processes for e2e tests and benchmarks.

Each role is `python -m onair.cli <role>` with its own log file, against the real Kafka and
S3 that `make test` started. A harness gets its own state dir, store prefix and ports, so
harnesses never see each other's playlists.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# roles that serve /metrics and /healthz on --metrics-port
HEALTH_ROLES = ("ingest", "package", "transcode", "vod")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and never one this process handed out before: a role
    binds its port a second or so after it is chosen, and the kernel may offer the same free
    port to the next caller meanwhile (a role then died on `Address already in use`)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s}s")


class Platform:
    def __init__(self, work_dir: Path, **env: str) -> None:
        self.work_dir = work_dir
        self.logs = work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.h2c_port = free_port()
        self.prefix = f"e2e-{uuid.uuid4().hex[:8]}"
        # consumer groups of its own: no harness ever shares partitions with another one, and
        # new groups start at the live edge (see `wait_ready`)
        self.group_prefix = f"test-{uuid.uuid4().hex[:8]}"
        bucket = os.environ.get("ONAIR_S3_BUCKET", "onair")
        self.env = {
            **os.environ,
            "ONAIR_STATE_DIR": str(work_dir / "state"),
            "ONAIR_STORAGE_URL": f"s3://{bucket}/{self.prefix}",
            "ONAIR_S3_ENDPOINT": os.environ.get("ONAIR_S3_ENDPOINT", "http://127.0.0.1:9000"),
            "ONAIR_S3_ACCESS_KEY": os.environ.get("ONAIR_S3_ACCESS_KEY", "onair"),
            "ONAIR_S3_SECRET_KEY": os.environ.get("ONAIR_S3_SECRET_KEY", "onair-secret-key"),
            "ONAIR_RTMP_HOST": "127.0.0.1",
            "ONAIR_RTMP_PORT": str(self.rtmp_port),
            "ONAIR_HTTP_HOST": "127.0.0.1",
            "ONAIR_HTTP_PORT": str(self.http_port),
            "ONAIR_H2C_PORT": str(self.h2c_port),
            "ONAIR_PUBLIC_HOST": "127.0.0.1",
            "ONAIR_GROUP_PREFIX": self.group_prefix,
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.health_urls: dict[str, str] = {}
        self._publishes = 0
        self.last_publish_log = ""

    def cli(self, *args: str, timeout_s: float = 60.0) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "onair.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise RuntimeError(f"onair {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def create_channel(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.cli("channel", "create", name, "--json"))
        return info

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a role; its /healthz (the worker roles' metrics port, or the HTTP gateway's)
        is kept for `wait_healthy`."""
        if args and args[0] in HEALTH_ROLES and "--metrics-port" not in args:
            port = free_port()
            args = (*args, "--metrics-port", str(port))
            self.health_urls[name] = f"http://127.0.0.1:{port}/healthz"
        elif args and args[0] == "http":
            self.health_urls[name] = self.url("/healthz")
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "onair.cli", *args],
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def wait_ready(self, *roles: str, timeout_s: float = 90.0) -> None:
        """Wait until each role's consumer group (`transcode.720p60`, `packager`, …) is stable
        with its partitions assigned: workers of a new group start at the live edge, so a
        stream published before they are in would lose its first GOPs."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": self.env.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")}
        )
        groups = [f"{self.group_prefix}.{role}" for role in roles]
        deadline = time.monotonic() + timeout_s
        pending = set(groups)
        while pending:
            for group, future in admin.describe_consumer_groups(list(pending)).items():
                try:
                    description = future.result()
                except Exception:
                    continue
                assigned = any(m.assignment.topic_partitions for m in description.members)
                if description.state == ConsumerGroupState.STABLE and assigned:
                    pending.discard(group)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"groups not ready after {timeout_s}s: {sorted(pending)}")
            time.sleep(0.3)

    def start_live(self, rungs: Sequence[str]) -> None:
        """Every live role as its own process — ingest, packager, HTTP origin, one transcode
        worker per rung — and wait until they listen and their groups hold partitions."""
        for role in ("ingest", "package", "http"):
            self.start(role, role)
        for rung in rungs:
            self.start(f"transcode-{rung}", "transcode", "--rendition", rung)
        wait_port(self.rtmp_port)
        wait_port(self.http_port)
        self.wait_ready("packager", *(f"transcode.{r}" for r in rungs))

    def health(self, name: str) -> tuple[int, str]:
        """(status, body) of the role's /healthz; (0, why) while it does not answer."""
        from onair.supervisor import health_status

        return health_status(self.health_urls[name])

    def wait_healthy(self, *names: str, timeout_s: float = 120.0) -> None:
        """Wait until each role's /healthz answers 200, as a probe would. A role that exits
        meanwhile fails at once."""
        last: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        pending = set(names or self.health_urls)
        while pending:
            for name in sorted(pending):
                status, body = self.health(name)
                last[name] = f"{status} {body}"
                if status == 200:
                    pending.discard(name)
                elif self.procs[name].poll() is not None:
                    raise AssertionError(
                        f"{name} exited ({self.procs[name].returncode}) before it was ready:\n"
                        + self.log_tail(name)
                    )
            if pending and time.monotonic() > deadline:
                states = {name: last[name] for name in sorted(pending)}
                raise TimeoutError(f"roles not healthy after {timeout_s}s: {states}")
            time.sleep(0.2)

    def terminate(self, name: str) -> None:
        """SIGTERM: the role stops as an operator's restart or a deploy stops it."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no final commit — the crash a successor must survive."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str, timeout_s: float = 10.0) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=timeout_s) as response:
            body: bytes = response.read()
            return body

    def get_or_none(self, path: str) -> bytes | None:
        try:
            return self.get(path)
        except OSError:
            return None

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def publish(
        self,
        key: str,
        seconds: float,
        *,
        size: str = "1280x720",
        fps: int = 30,
        realtime: bool = True,
        port: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Real ffmpeg pushes a test pattern with a tone, keyframe every 2 s."""
        gop = str(fps * 2)
        args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
        if realtime:
            args.append("-re")
        args += [
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate={fps}",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-g",
            gop,
            "-keyint_min",
            gop,
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-f",
            "flv",
            f"rtmp://127.0.0.1:{port or self.rtmp_port}/live/{key}",
        ]
        self._publishes += 1
        log = open(self.logs / f"ffmpeg-{self._publishes}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.last_publish_log = log.name
        return proc


def records_since(
    bootstrap: str,
    topic: str,
    since_s: float,
    *,
    key: str | None = None,
    count: int | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 2.0,
) -> list[tuple[str, dict[str, Any]]]:
    """Decoded records of `topic` (every partition) produced since `since_s` (epoch seconds),
    optionally only those with `key`; stops at `count` records, or once nothing came for
    `idle_s`, or at `timeout_s`."""
    from confluent_kafka import TopicPartition

    from schemas.codec import Codec
    from topics.client import make_consumer, poll_checked

    codec = Codec()
    consumer = make_consumer(bootstrap, None)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        since_ms = int(since_s * 1000)
        wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
        consumer.assign(consumer.offsets_for_times(wanted, timeout=10))
        records: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and (count is None or len(records) < count):
            msg = poll_checked(consumer, 0.2)
            if msg is None:
                if count is None and time.monotonic() - quiet_since > idle_s:
                    break
                continue
            quiet_since = time.monotonic()
            if key is None or msg.key() == key.encode():
                records.append(codec.decode(msg.value()))
        return records
    finally:
        consumer.close()


def parse_media_playlist(text: str) -> dict[str, Any]:
    """The parts of a media playlist the tests check."""
    segments: list[dict[str, Any]] = []
    info: dict[str, Any] = {"segments": segments, "ended": False, "media_sequence": None}
    duration = None
    discontinuity = False
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            info["media_sequence"] = int(line.split(":")[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            info["target_duration"] = int(line.split(":")[1])
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":")[1].rstrip(","))
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line == "#EXT-X-ENDLIST":
            info["ended"] = True
        elif line and not line.startswith("#"):
            segments.append({"uri": line, "duration": duration, "discontinuity": discontinuity})
            discontinuity = False
    return info


def segment_sequence(uri: str) -> int:
    """The sequence number of a live segment from its playlist URI (`<stream>/000042.ts`)."""
    return int(uri.rsplit("/", 1)[-1].split(".", 1)[0])


def parse_master_playlist(text: str) -> list[dict[str, str]]:
    variants = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs: dict[str, str] = {}
            for part in _split_attributes(line.split(":", 1)[1]):
                key, _, value = part.partition("=")
                attrs[key] = value.strip('"')
            attrs["uri"] = lines[index + 1]
            variants.append(attrs)
    return variants


def _split_attributes(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts
