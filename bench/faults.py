"""The fault matrix: SIGKILL every role in turn under one live stream and show what was lost.

    python -m bench.faults [--packager-kills 10] [--settle-s 6]      (make faults)

Needs the services (`make services`). Every role runs as its own process on the real Kafka
and S3 (the harness of the e2e tests): ingest, the packager, the VOD worker, the HTTP origin
and one transcode worker per rung a 720p30 source uses (720p60 → 720p30, 480p30, 360p30,
160p30). Real ffmpeg publishes 720p30 with a tone and 2 s keyframes, in real time. While it
streams, one role at a time is killed with SIGKILL (no goodbye, no final commit) and started
again, and the next fault waits until the pipeline has recovered:

1. each transcode worker (one per rung);
2. the packager, `--packager-kills` times (the issue asks for ≥ 10 with no hang);
3. the HTTP origin;
4. with `--cluster` (the 3-broker KRaft cluster of `infra/kafka cluster-start`, topics with
   replication 3 and min.insync.replicas 2): one broker SIGKILLed, down for 10 s, started
   again (`infra/kafka node-stop 2 --kill`, `node-start 2`);
5. the ingest, last: the publisher's connection dies with it; the restarted ingest finds the
   lease of the dead one lapse and ends the stream (`StreamEnded`, end-of-stream marker);
6. the VOD worker, as soon as the stream ended: while it builds the VOD (or is about to).

Recovery, per fault: from the SIGKILL until what the role makes is visible again. For a
transcode worker: its rendition's playlist (served by the origin) lists a segment newer than
any rendition listed just after the kill (asked of the origin then). For the packager, the
origin (once healthy again) and a broker (watched while it is down): every rendition's
playlist does. For the ingest: the `StreamEnded` of the stream it carried. For the VOD worker:
the stream's VOD record. The same measure is taken once before any
fault (the "none" row) as the reference. A viewer polls every playlist through the origin all
along; any answer other than 200 while the origin itself is up is counted against the fault
that was running.

At the end, every rendition's playlist must list each sequence 0..last (the `StreamEnded`'s
`last_sequence`) exactly once and be ended, every segment must decode (ffprobe, every video
frame), and the VOD must be complete with every rendition and the stream's duration. Prints
the table fault x role → segments lost / listed twice / undecodable, recovery time, viewer
errors; exits 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import describe
from tests.harness import Platform, parse_media_playlist, segment_sequence, wait_port
from tests.mediafixtures import probe_frames
from topics.specs import GOPS, SEGMENTS, STREAMS, VODS
from topics.table import TableReader

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_BOOTSTRAP = "localhost:19092,localhost:19093,localhost:19094"
BROKER = "2"  # the node killed with --cluster
BROKER_DOWN_S = 10.0
# the transcode workers a 720p30 source uses → the rendition each makes
WORKERS = {"720p60": "720p30", "480p30": "480p30", "360p30": "360p30", "160p30": "160p30"}
RENDITIONS = list(WORKERS.values())
ROLES = ("ingest", "package", "vod", "http", *(f"transcode-{w}" for w in WORKERS))
# role → its consumer group (under the harness's prefix) and the topic it consumes
ROLE_GROUPS = {
    "package": ("packager", SEGMENTS),
    "vod": ("vod", STREAMS),
    **{f"transcode-{w}": (f"transcode.{w}", GOPS) for w in WORKERS},
}
RECOVERY_LIMIT_S = 120.0


def start_role(platform: Platform, name: str) -> None:
    """Start one of ROLES (`transcode-<rung>` is `onair transcode --rendition <rung>`)."""
    if name.startswith("transcode-"):
        platform.start(name, "transcode", "--rendition", name.removeprefix("transcode-"))
    else:
        platform.start(name, name)


@dataclass
class Fault:
    name: str  # what was killed
    role: str
    started: float = 0.0  # monotonic, at the SIGKILL
    first_sequence: int = 0  # the GOPs from here to the next fault's are this fault's
    recovered_s: float | None = None
    viewer_errors: int = 0
    note: str = ""


@dataclass
class Viewer:
    """Polls every rendition's playlist through the origin, as players do (every 0.5 s)."""

    platform: Platform
    channel: str
    newest: dict[str, int] = field(default_factory=dict)  # rendition → newest sequence listed
    errors: int = 0
    last_error: str = ""
    origin_down: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for rendition in RENDITIONS:
                try:
                    newest = self.fetch(rendition)
                except Exception as exc:  # refused, reset, cut short, a 5xx, a bad playlist
                    status = getattr(exc, "code", None)
                    if status == 404 and rendition not in self.newest:
                        continue  # not started yet
                    with self.lock:
                        if not self.origin_down:
                            self.errors += 1
                            self.last_error = f"{rendition}: {type(exc).__name__}: {exc}"
                    continue
                if newest is not None:
                    with self.lock:
                        self.newest[rendition] = newest

    def fetch(self, rendition: str) -> int | None:
        """The newest sequence `rendition`'s playlist lists now (None: none yet)."""
        path = f"/live/{self.channel}/{rendition}/index.m3u8"
        segments = parse_media_playlist(self.platform.get(path, timeout_s=5).decode())["segments"]
        return max((segment_sequence(s["uri"]) for s in segments), default=None)

    def now(self, renditions: list[str]) -> dict[str, int]:
        """The newest sequence of each rendition, asked of the origin now (not the last poll);
        the last poll's for a rendition the origin cannot answer for."""
        found = self.snapshot()
        for rendition in renditions:
            with contextlib.suppress(Exception):
                newest = self.fetch(rendition)
                if newest is not None:
                    found[rendition] = newest
        return found

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.newest)


class Matrix:
    def __init__(self, work: Path, bootstrap: str, settle_s: float, cluster: bool) -> None:
        self.work = work
        self.settle_s = settle_s
        self.cluster = cluster
        env = {"ONAIR_PLAYLIST_WINDOW": "1000"}
        if cluster:
            env |= {"ONAIR_KAFKA_BOOTSTRAP": bootstrap, "ONAIR_REPLICATION": "3"}
        self.platform = Platform(work, **env)
        self.platform.cli("topics")
        self.channel = f"faults_{uuid.uuid4().hex[:8]}"
        self.key = self.platform.create_channel(self.channel)["stream_key"]
        self.streams = TableReader(bootstrap, STREAMS, None)
        self.vods = TableReader(bootstrap, VODS, "Vod")
        self.viewer = Viewer(self.platform, self.channel)
        self.faults: list[Fault] = []

    # ---- roles -------------------------------------------------------------------------------

    def kill_and_restart(self, fault: Fault) -> int:
        """SIGKILL, restart, wait for the group; → the newest sequence listed at the kill."""
        self.platform.kill(fault.name)
        fault.started = time.monotonic()
        at_kill = max(self.viewer.now(RENDITIONS).values(), default=-1)
        start_role(self.platform, fault.name)
        try:
            if fault.name in ROLE_GROUPS:
                group = ROLE_GROUPS[fault.name][0]
                self.platform.wait_ready(group, timeout_s=RECOVERY_LIMIT_S)
        except TimeoutError as exc:
            fault.note = f"hung: {exc}"
        return at_kill

    # ---- recovery ----------------------------------------------------------------------------

    def wait_newer(self, fault: Fault, renditions: list[str], at_kill: int) -> None:
        """Until each of `renditions` lists a segment newer than `at_kill` (the newest any
        rendition listed just after the kill)."""
        deadline = fault.started + RECOVERY_LIMIT_S
        while time.monotonic() < deadline:
            newest = self.viewer.snapshot()
            if all(newest.get(r, -1) > at_kill for r in renditions):
                fault.recovered_s = time.monotonic() - fault.started
                return
            time.sleep(0.05)
        fault.note = fault.note or f"no new segment within {RECOVERY_LIMIT_S:.0f} s"

    def run_fault(self, name: str, role: str, renditions: list[str]) -> Fault:
        """Kill `name`, restart it, wait until `renditions` list a newer segment, then let the
        pipeline settle; the viewer's errors from the kill to the next fault are this one's."""
        fault = Fault(name, role)
        self.faults.append(fault)
        errors_before = self.viewer.errors
        before = self.viewer.now(RENDITIONS)
        # the GOPs from the oldest rendition's next one on are this fault's (a lagging rung's too)
        fault.first_sequence = 0 if name == "none" else min(before.values(), default=-1) + 1
        restart: threading.Thread | None = None
        at_kill = max(before.values(), default=-1)
        if name == "none":
            fault.started = time.monotonic()
        elif name == "broker":
            fault.started = time.monotonic()
            infra_kafka("node-stop", BROKER, "--kill")  # returns once the others dropped it
            at_kill = max(self.viewer.now(RENDITIONS).values(), default=-1)
            restart = threading.Thread(target=self.restart_broker, args=(fault.started,))
            restart.start()  # the stream is watched while the broker is down
        elif name == "http":  # at_kill: the last the viewers saw
            self.viewer.origin_down = True
            self.platform.kill("http")
            fault.started = time.monotonic()
            at_kill = max(self.viewer.snapshot().values(), default=-1)
            start_role(self.platform, "http")
            try:  # down until it says it is healthy; every error after that counts
                self.platform.wait_healthy("http", timeout_s=RECOVERY_LIMIT_S)
            except (TimeoutError, AssertionError) as exc:
                fault.note = f"origin not healthy: {exc}"
            self.viewer.origin_down = False
        else:
            at_kill = self.kill_and_restart(fault)
        self.wait_newer(fault, renditions, at_kill)
        print(f"  {name:<18} recovered in {fmt(fault.recovered_s)} {fault.note}", flush=True)
        if restart is not None:
            restart.join()
        time.sleep(self.settle_s)
        fault.viewer_errors = self.viewer.errors - errors_before
        return fault

    def restart_broker(self, killed_at: float) -> None:
        time.sleep(max(0.0, killed_at + BROKER_DOWN_S - time.monotonic()))
        infra_kafka("node-start", BROKER)

    # ---- the run -----------------------------------------------------------------------------

    def run(self, packager_kills: int) -> dict[str, Any]:
        platform = self.platform
        for name in ROLES:
            start_role(platform, name)
        self.streams.start()
        self.vods.start()
        wait_port(platform.rtmp_port)
        wait_port(platform.http_port)
        platform.wait_ready(*(group for group, _topic in ROLE_GROUPS.values()))
        threading.Thread(target=self.viewer.run, daemon=True).start()

        publisher = platform.publish(self.key, 3600)
        started = time.monotonic()
        assert self.streams.wait_for(
            lambda d: d.get(self.channel, {}).get("_type") == "StreamStarted", 30
        ), platform.log_tail("ingest")
        stream_id = self.streams.get(self.channel)["stream_id"]  # type: ignore[index]
        print(f"stream {stream_id} on channel {self.channel}", flush=True)
        while len(self.viewer.snapshot()) < len(RENDITIONS):
            if time.monotonic() - started > 60:
                raise RuntimeError(f"no playlists after 60 s:\n{platform.log_tail('package')}")
            time.sleep(0.2)

        self.run_fault("none", "(reference)", RENDITIONS)
        for worker, rendition in WORKERS.items():
            self.run_fault(f"transcode-{worker}", "transcode", [rendition])
        for _ in range(packager_kills):
            self.run_fault("package", "packager", RENDITIONS)
        self.run_fault("http", "origin (HTTP)", RENDITIONS)
        if self.cluster:
            self.run_fault("broker", f"Kafka broker {BROKER} of 3", RENDITIONS)

        # the ingest: the publisher goes with it; the restarted ingest ends the stream
        ingest = Fault("ingest", "ingest")
        self.faults.append(ingest)
        errors_before = self.viewer.errors
        ingest.first_sequence = min(self.viewer.now(RENDITIONS).values(), default=-1) + 1
        platform.kill("ingest")
        ingest.started = time.monotonic()
        start_role(platform, "ingest")
        try:
            publisher.wait(30)  # its connection died with the ingest
        except subprocess.TimeoutExpired:
            publisher.kill()
        ended = self.streams.wait_for(
            lambda d: d.get(self.channel, {}).get("_type") == "StreamEnded", RECOVERY_LIMIT_S
        )
        if ended:
            ingest.recovered_s = time.monotonic() - ingest.started
            ingest.note = "StreamEnded (lease TTL + grace)"
        else:
            ingest.note = "never ended"
        ingest.viewer_errors = self.viewer.errors - errors_before
        print(f"  {'ingest':<18} ended in {fmt(ingest.recovered_s)}", flush=True)

        # the VOD worker, at once: it is building this stream's VOD (or about to)
        vod = Fault("vod", "VOD", first_sequence=1 << 62)  # no GOP: the VOD is its outcome
        self.faults.append(vod)
        errors_before = self.viewer.errors
        if stream_id in self.vods.snapshot():
            vod.note = "the VOD was built before the kill"
        self.kill_and_restart(vod)
        if self.vods.wait_for(lambda d: stream_id in d, RECOVERY_LIMIT_S * 2):
            vod.recovered_s = time.monotonic() - vod.started
        else:
            vod.note = "no VOD"
        print(f"  {'vod':<18} VOD in {fmt(vod.recovered_s)} {vod.note}", flush=True)
        self.viewer.stopped.set()
        vod.viewer_errors = self.viewer.errors - errors_before
        end = self.streams.get(self.channel) or {}
        return {"stream_id": stream_id, "ended": end, "vod": self.vods.get(stream_id) or {}}

    def check(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """Every rendition: sequences 0..last exactly once, ended, every segment decodes."""
        last = outcome["ended"].get("last_sequence", -1)
        expected = list(range(last + 1))
        report: dict[str, Any] = {"last_sequence": last, "renditions": {}}
        deadline = time.monotonic() + 60
        texts: dict[str, str] = {}
        while time.monotonic() < deadline:
            for rendition in RENDITIONS:
                body = self.platform.get_or_none(f"/live/{self.channel}/{rendition}/index.m3u8")
                texts[rendition] = body.decode() if body else ""
            if all(parse_media_playlist(t)["ended"] for t in texts.values()):
                break
            time.sleep(1)
        for rendition, text in texts.items():
            info = parse_media_playlist(text)
            listed = [segment_sequence(s["uri"]) for s in info["segments"]]
            undecodable = []
            for segment in info["segments"]:
                path = self.work / "viewer" / rendition / segment["uri"].rsplit("/", 1)[-1]
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    path.write_bytes(
                        self.platform.get(f"/live/{self.channel}/{rendition}/{segment['uri']}")
                    )
                    if not probe_frames(path):
                        undecodable.append(segment_sequence(segment["uri"]))
                except Exception:  # a segment that cannot be read is lost
                    undecodable.append(segment_sequence(segment["uri"]))
            report["renditions"][rendition] = {
                "ended": info["ended"],
                "missing": sorted(set(expected) - set(listed)),
                "twice": sorted({s for s in listed if listed.count(s) > 1}),
                "unexpected": sorted(set(listed) - set(expected)),
                "undecodable": undecodable,
                "duration_s": sum(s["duration"] for s in info["segments"]),
            }
        vod = outcome["vod"]
        live_s = max((r["duration_s"] for r in report["renditions"].values()), default=0.0)
        report["vod"] = {
            "status": vod.get("status"),
            "renditions": vod.get("renditions"),
            "duration_s": vod.get("duration_ms", 0) / 1000,
            "complete": vod.get("status") == "complete"
            and sorted(vod.get("renditions") or []) == sorted(RENDITIONS)
            and abs(vod.get("duration_ms", 0) / 1000 - live_s) <= 2.0,
        }
        return report

    def stop(self) -> None:
        self.viewer.stopped.set()
        self.streams.stop()
        self.vods.stop()
        self.platform.stop()


def infra_kafka(*args: str) -> None:
    subprocess.run([str(ROOT / "infra" / "kafka"), *args], check=True, cwd=ROOT, timeout=180)


def fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.1f} s"


def problems(matrix: Matrix, report: dict[str, Any]) -> list[str]:
    """What went wrong, one line each; empty when nothing was lost, nothing hung and no viewer
    saw an error while the origin itself was up."""
    found = []
    renditions = report["renditions"]
    if report["last_sequence"] < 0:
        found.append("the stream never ended (no StreamEnded with a last_sequence)")
    for rendition, r in renditions.items():
        for what in ("missing", "twice", "unexpected", "undecodable"):
            if r[what]:
                found.append(f"{rendition}: {what} sequences {r[what]}")
        if not r["ended"]:
            found.append(f"{rendition}: the playlist never ended")
    if not report["vod"]["complete"]:
        found.append(f"VOD incomplete: {report['vod']}")
    for fault in matrix.faults:
        if fault.recovered_s is None or fault.note.startswith("hung"):
            found.append(f"{fault.name}: did not recover ({fault.note})")
        if fault.viewer_errors:
            found.append(
                f"{fault.name}: {fault.viewer_errors} playlist requests failed "
                f"(the last: {matrix.viewer.last_error})"
            )
    return found


def print_table(matrix: Matrix, report: dict[str, Any]) -> bool:
    renditions = report["renditions"]
    lost = sorted({s for r in renditions.values() for s in r["missing"] + r["undecodable"]})
    twice = sorted({s for r in renditions.values() for s in r["twice"]})
    wrong = problems(matrix, report)
    print()
    print(f"machine: {describe()}")
    print(
        f"stream: sequences 0..{report['last_sequence']} "
        f"({report['last_sequence'] + 1} GOPs of 2 s) in {len(renditions)} renditions"
    )
    print()
    print("GOPs lost / listed twice: in any rendition, counted from the fault to the next one")
    print("| fault (SIGKILL, restarted) | role | lost | listed twice | recovery | viewer errors |")
    print("|---|---|---|---|---|---|")
    rows: dict[tuple[str, str], list[Fault]] = {}
    for fault in matrix.faults:
        rows.setdefault((fault.name, fault.role), []).append(fault)
    starts = [*sorted({f.first_sequence for f in matrix.faults}), 1 << 63]

    def within(fault: Fault, sequences: list[int]) -> int:
        end = next(n for n in starts if n > fault.first_sequence)
        return sum(1 for n in sequences if fault.first_sequence <= n < end)

    for (name, role), faults in rows.items():
        times = [f.recovered_s for f in faults if f.recovered_s is not None]
        if len(faults) > 1:
            recovery = (
                f"median {statistics.median(times):.1f} s, max {max(times):.1f} s "
                f"({len(times)}/{len(faults)} recovered)"
                if times
                else "never"
            )
        else:
            recovery = fmt(times[0]) if times else "never"
        notes = "; ".join(sorted({f.note for f in faults if f.note}))
        errors = sum(f.viewer_errors for f in faults)
        label = "none" if name == "none" else f"{name} x {len(faults)}"
        if name == "vod":
            lost_cell = "VOD complete" if report["vod"]["complete"] else "VOD INCOMPLETE"
            twice_cell = "—"
        else:
            lost_cell = f"{sum(within(f, lost) for f in faults)} GOPs"
            twice_cell = str(sum(within(f, twice) for f in faults))
        print(
            f"| {label} | {role} | {lost_cell} | {twice_cell} | {recovery}"
            f"{' (' + notes + ')' if notes else ''} | {errors} |"
        )
    print()
    for rendition, r in renditions.items():
        print(
            f"{rendition}: ended={r['ended']} missing={r['missing']} twice={r['twice']} "
            f"unexpected={r['unexpected']} undecodable={r['undecodable']} "
            f"duration={r['duration_s']:.1f} s"
        )
    vod = report["vod"]
    print(
        f"VOD: status={vod['status']} renditions={vod['renditions']} "
        f"duration={vod['duration_s']:.1f} s complete={vod['complete']}"
    )
    for line in wrong:
        print("PROBLEM:", line)
    print("RESULT:", "nothing lost" if not wrong else "LOSS, HANG OR VIEWER ERRORS (see above)")
    return not wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--packager-kills", type=int, default=10)
    parser.add_argument("--settle-s", type=float, default=6.0, help="pause between faults")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run on the 3-broker cluster (started if needed) and kill a broker too",
    )
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("ONAIR_KAFKA_BOOTSTRAP", "localhost:9092")
    started_cluster = False
    if args.cluster:
        bootstrap = CLUSTER_BOOTSTRAP
        if subprocess.run([str(ROOT / "infra" / "kafka"), "cluster-status"]).returncode != 0:
            infra_kafka("cluster-start", "--fresh")
            started_cluster = True
    try:
        with tempfile.TemporaryDirectory(prefix="onair-faults-") as tmp:
            matrix = Matrix(Path(tmp), bootstrap, args.settle_s, args.cluster)
            try:
                outcome = matrix.run(args.packager_kills)
                report = matrix.check(outcome)
            finally:
                matrix.stop()
            ok = print_table(matrix, report)
            if not ok:
                for name in ("ingest", "package", "vod", "http"):
                    print(f"--- {name}\n{matrix.platform.log_tail(name, 15)}")
    finally:
        if started_cluster:
            infra_kafka("cluster-stop")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
