"""A role's /healthz: "starting" (503, with what it waits for) until it consumes, then 200."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from pipeline.health import Health
from pipeline.metrics import Registry
from pipeline.metrics_server import serve_metrics


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode(), response.headers["Cache-Control"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers["Cache-Control"]


def test_health_moves_from_starting_to_ok_and_not_back() -> None:
    health = Health("transcode 720p60")
    assert health.render() == (503, "starting: starting up\n")
    health.starting("waiting for kafka: onair.segments[0] has no leader yet")
    assert health.render() == (
        503,
        "starting: waiting for kafka: onair.segments[0] has no leader yet\n",
    )
    health.ok()
    assert health.render() == (200, "ok\n")
    health.starting("joining group")  # a later rebalance is not a restart
    assert health.render() == (200, "ok\n")
    health.failed("an event failed")
    assert health.render() == (503, "failed: an event failed\n")


@pytest.fixture
def served() -> Iterator[tuple[Health, str]]:
    health = Health("package")
    server = serve_metrics(Registry(), "127.0.0.1", 0, health)
    yield health, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_healthz_is_served_beside_metrics(served: tuple[Health, str]) -> None:
    health, base = served
    status, body, cache = _get(f"{base}/healthz")
    assert (status, body, cache) == (503, "starting: starting up\n", "no-store")
    health.ok()
    assert _get(f"{base}/healthz")[:2] == (200, "ok\n")
    assert _get(f"{base}/metrics")[0] == 200
    assert _get(f"{base}/other")[0] == 404
