"""`onair up`'s supervisor: every role as a child process, restarted with backoff when it
dies, and the wait for every role's `/healthz` to say ok."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class RestartPolicy:
    """Exponential backoff for a role that keeps dying: the first restart after `base_s`, each
    quick death after that doubles the wait up to `max_s`; a child that ran `healthy_s` or
    longer before it died starts the count again (Kubernetes' CrashLoopBackOff, in short)."""

    base_s: float = 1.0
    max_s: float = 60.0
    healthy_s: float = 60.0
    failures: int = 0

    def delay_after(self, ran_s: float) -> float:
        """How long to wait before restarting a child that died after running `ran_s`."""
        if ran_s >= self.healthy_s:
            self.failures = 0
        self.failures += 1
        return float(min(self.max_s, self.base_s * 2 ** (self.failures - 1)))


class Supervisor:
    """Runs each role as a child process and restarts one that dies (it resumes from its
    committed offsets) with a growing delay while it keeps dying, until stopped."""

    def __init__(
        self,
        roles: dict[str, list[str]],
        log_dir: Path,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        poll_s: float = 1.0,
    ) -> None:
        self.roles = roles
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.policies = {name: policy() for name in roles}
        self.restart_at: dict[str, float] = {}
        self.starts: dict[str, int] = dict.fromkeys(roles, 0)
        self.poll_s = poll_s
        self.stopping = threading.Event()

    def start(self, name: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name.replace(' ', '-')}.log", "ab")  # noqa: SIM115
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "onair.cli", *self.roles[name]],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started_at[name] = time.monotonic()
        self.starts[name] += 1

    def run(self) -> None:
        for name in self.roles:
            self.start(name)
        while not self.stopping.wait(self.poll_s):
            self.step(time.monotonic())

    def step(self, now: float) -> None:
        """Schedule a restart for each child that died; start those whose wait is over."""
        for name, child in list(self.children.items()):
            code = child.poll()
            if code is None or name in self.restart_at or self.stopping.is_set():
                continue
            delay = self.policies[name].delay_after(now - self.started_at[name])
            self.restart_at[name] = now + delay
            logger.warning("%s exited with %s; restarting in %.0f s", name, code, delay)
        for name, when in list(self.restart_at.items()):
            if now >= when and not self.stopping.is_set():
                del self.restart_at[name]
                self.start(name)

    def stop(self) -> None:
        self.stopping.set()
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


READY_WAIT_S = 180.0


def health_status(url: str) -> tuple[int, str]:
    """→ (HTTP status, body) of a role's /healthz; (0, why) while it does not answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace").strip()
    except OSError as exc:
        return 0, f"starting: not answering yet ({exc})"


def report_ready(
    health: dict[str, str], stopping: threading.Event, timeout_s: float = READY_WAIT_S
) -> bool:
    """Poll every role's /healthz until all say ok; print `onair is ready` (or, past the
    bound, which roles are still starting and why, every 30 s after that)."""
    started = time.monotonic()
    pending = dict(health)
    said = 0.0
    while pending and not stopping.wait(0.5):
        for name, url in list(pending.items()):
            if health_status(url)[0] == 200:
                del pending[name]
        elapsed = time.monotonic() - started
        if pending and elapsed > timeout_s and elapsed - said > 30:
            said = elapsed
            for name, url in pending.items():
                print(f"onair: {name} not ready after {elapsed:.0f} s: {health_status(url)[1]}")
            sys.stdout.flush()
    if pending:
        return False
    print(f"onair is ready: every role consumes ({time.monotonic() - started:.1f} s)", flush=True)
    return True
