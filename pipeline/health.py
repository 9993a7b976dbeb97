"""What a role's `/healthz` answers: "starting" until it really consumes, then "ok".

A role creates one `Health`, says what it is waiting for while it starts (`starting("…")`),
and calls `ok()` once it consumes: its group joined and partitions assigned, its tables read
to their end, its listener open. `failed("…")` marks a role that can no longer do its job
(it is about to exit). Harnesses, `onair up` and Kubernetes readiness probes wait on the
status code: 200 when ok, 503 otherwise, with the state and reason as the body.

A part that can fail and recover while the role runs (a topic follower restarting its
consumer) is attached with `watch(name, probe)`: `probe()` returns None while the part is
fine, else what is wrong. While any probe reports, `/healthz` answers 503
`degraded: <name>: <reason>` (several joined by "; "), and 200 again once all recover;
`failed` still wins over it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

STARTING = "starting"
OK = "ok"
FAILED = "failed"
DEGRADED = "degraded"

Probe = Callable[[], "str | None"]


class Health:
    def __init__(self, role: str) -> None:
        self.role = role
        self._lock = threading.Lock()
        self._state = STARTING
        self._detail = "starting up"
        self._since = time.monotonic()
        self._probes: dict[str, Probe] = {}

    def starting(self, detail: str) -> None:
        """Still starting, now waiting for `detail` (no effect once ok or failed)."""
        with self._lock:
            if self._state == STARTING:
                self._detail = detail

    def ok(self) -> None:
        with self._lock:
            if self._state != STARTING:
                return
            self._state, self._detail = OK, ""
            waited = time.monotonic() - self._since
        logger.info("%s: ready (consuming) after %.1f s", self.role, waited)

    def failed(self, detail: str) -> None:
        with self._lock:
            self._state, self._detail = FAILED, detail

    def watch(self, name: str, probe: Probe) -> None:
        """Ask `probe()` at every render: None → fine, a string → what is wrong with `name`.
        Watching a name again replaces its probe."""
        with self._lock:
            self._probes[name] = probe

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._probes.pop(name, None)

    def problems(self) -> list[str]:
        """`<name>: <reason>` for every watched part that reports one, in watch order."""
        with self._lock:
            probes = list(self._probes.items())
        found = []
        for name, probe in probes:
            try:
                reason = probe()
            except Exception as exc:  # a broken probe is a problem, not a crashed /healthz
                reason = f"probe raised {type(exc).__name__}: {exc}"
            if reason is not None:
                found.append(f"{name}: {reason}")
        return found

    def render(self) -> tuple[int, str]:
        """→ (HTTP status, body) for `/healthz`."""
        with self._lock:
            state, detail = self._state, self._detail
        if state != FAILED:
            problems = self.problems()
            if problems:
                return 503, f"{DEGRADED}: {'; '.join(problems)}\n"
        if state == OK:
            return 200, "ok\n"
        return 503, f"{state}: {detail}\n"
