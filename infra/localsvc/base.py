"""Paths, the Java and Maven checks, installing from Maven Central, background processes."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CACHE = ROOT / ".cache"
RUN = ROOT / ".run"
LOGS = RUN / "logs"
M2 = CACHE / "m2"

MIN_JAVA = 17
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class InfraError(Exception):
    """A service could not be installed, started or stopped; the message says why."""


# --------------------------------------------------------------------------- helpers


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"({rel(path)} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise start/stop/install between concurrent callers (several agents, make -j)."""
    lock_dir = RUN if name != "install" else CACHE
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def java_binary() -> str:
    """The java to run: $JAVA_HOME/bin/java if set, else the first on PATH; must be 17+."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise InfraError(
            f"Java {MIN_JAVA}+ is required to run Kafka and S3Proxy, and no `java` was found "
            f"(JAVA_HOME={home or 'unset'}). On Debian: `make system` "
            "(or apt-get install default-jre-headless)."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise InfraError(f"cannot tell the version of {java}: {out.stderr.strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise InfraError(
            f"Java {MIN_JAVA}+ is required (Kafka 4 and S3Proxy 4 need it); {java} is Java "
            f"{major}. Install a newer JDK (apt-get install openjdk-17-jre-headless) and put "
            "it first on PATH or set JAVA_HOME."
        )
    return java


def _maven() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise InfraError(
            "Maven (`mvn`) is needed once to fetch Kafka and S3Proxy from Maven Central; "
            "run `make system` (or apt-get install maven)."
        )
    return mvn


def _run_maven(args: Sequence[str], what: str) -> None:
    cmd = [_maven(), "-B", "-q", f"-Dmaven.repo.local={M2}", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip().splitlines()
        raise InfraError(f"mvn failed to fetch {what}:\n" + "\n".join(text[-30:]))


def install_artifact(name: str, home: Path, fetch: Sequence[str], payload: Path) -> Path:
    """Run one Maven fetch into ``payload`` unless ``home/.installed`` says it was done."""
    stamp = home / ".installed"
    if stamp.exists():
        return payload
    java_binary()
    with locked("install"):
        if stamp.exists():
            return payload
        if payload.is_dir():
            shutil.rmtree(payload)
        home.mkdir(parents=True, exist_ok=True)
        logger.info("installing %s from Maven Central into %s ...", name, rel(home))
        m2_before = _dir_bytes(M2)
        started = time.monotonic()
        _run_maven(fetch, name)
        seconds = time.monotonic() - started
        size = _dir_bytes(payload) if payload.is_dir() else payload.stat().st_size
        downloaded = _dir_bytes(M2) - m2_before
        files = len(list(payload.glob("*.jar"))) if payload.is_dir() else 1
        record = {
            "name": name,
            "seconds": round(seconds, 1),
            "bytes": size,
            "jars": files,
            "downloaded_bytes": downloaded,
            "installed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        stamp.write_text(json.dumps(record, indent=2) + "\n")
        logger.info(
            "installed %s: %d jar(s), %.1f MB, %.1f MB downloaded into .cache/m2, in %.1f s",
            name,
            files,
            size / 1e6,
            downloaded / 1e6,
            seconds,
        )
    return payload


# ----------------------------------------------------------------- processes and ports


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and is ours (its command line contains ``marker``), not a zombie."""
    proc = Path(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if not proc.exists():  # no procfs: trust the signal check
        return True
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    # An exiting process has an empty command line while it still holds its ports.
    return state not in ("Z", "X") and (marker in cmdline or not cmdline.strip())


@dataclass(frozen=True)
class Proc:
    """One background JVM the repo starts: where its pid, log and port are."""

    name: str
    pid_file: Path
    log_file: Path
    host: str
    port: int
    marker: str  # a string unique to this process's command line

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_pid(self) -> int | None:
        pid = self.pid()
        if pid is not None and _pid_alive(pid, self.marker):
            return pid
        return None

    def spawn(self, cmd: Sequence[str], out_file: Path, env: dict[str, str] | None = None) -> int:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with out_file.open("ab") as out:
            out.write(f"\n--- {datetime.datetime.now().isoformat()} start {self.name}\n".encode())
            out.flush()
            child = subprocess.Popen(
                list(cmd),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.pid_file.write_text(f"{child.pid}\n")
        return child.pid

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, *, kill: bool = False) -> bool:
        """SIGTERM (or SIGKILL if ``kill``), wait, SIGKILL after ``timeout_s``; True if it ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        while _pid_alive(pid, self.marker):
            if time.monotonic() - started > timeout_s:
                logger.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", self.name, pid, timeout_s
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                timeout_s = float("inf")
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        port_deadline = time.monotonic() + 10.0
        while port_open(self.host, self.port, 0.2) and time.monotonic() < port_deadline:
            time.sleep(0.1)
        how = "killed" if kill else "stopped"
        logger.info("%s: %s pid %d in %.1f s", self.name, how, pid, time.monotonic() - started)
        return True


def stop_all(procs: Sequence[Proc], timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Signal every process at once, then wait: a KRaft quorum stopped one node at a time
    loses its majority and the last nodes hang in controlled shutdown."""
    pids = {p: p.running_pid() for p in procs}
    for pid in pids.values():
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    stopped = [proc.stop(timeout_s) for proc in procs]
    return any(stopped)
