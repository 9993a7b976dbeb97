"""What a role's `/healthz` answers: "starting" until it really consumes, then "ok".

A role creates one `Health`, says what it is waiting for while it starts (`starting("…")`),
and calls `ok()` once it consumes: its group joined and partitions assigned, its tables read
to their end, its listener open. `failed("…")` marks a role that can no longer do its job
(it is about to exit). Harnesses, `onair up` and Kubernetes readiness probes wait on the
status code: 200 when ok, 503 otherwise, with the state and reason as the body.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

STARTING = "starting"
OK = "ok"
FAILED = "failed"


class Health:
    def __init__(self, role: str) -> None:
        self.role = role
        self._lock = threading.Lock()
        self._state = STARTING
        self._detail = "starting up"
        self._since = time.monotonic()

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

    def render(self) -> tuple[int, str]:
        """→ (HTTP status, body) for `/healthz`."""
        with self._lock:
            state, detail = self._state, self._detail
        if state == OK:
            return 200, "ok\n"
        return 503, f"{state}: {detail}\n"
