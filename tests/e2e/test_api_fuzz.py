"""schemathesis against the real `onair http`: every request it generates from
`/api/openapi.json` (with and without the admin token) gets an answer below 500.

The gateway runs as its own process on the real Kafka and S3 (as `onair http` does in
production), so what is fuzzed is what users reach: routing, body parsing, the REST API,
chat history and moderation, and the error handler in front of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.harness import Platform, wait_port

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "schemathesis-admin-token"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(Path(tmp_path_factory.mktemp("api-fuzz")), ONAIR_ADMIN_TOKEN=ADMIN_TOKEN)
    platform.start("http", "http")
    try:
        wait_port(platform.http_port, timeout_s=60)
        platform.wait_healthy("http")
        yield platform
    finally:
        platform.stop()


@pytest.fixture(scope="module")
def api_schema(gateway: Platform) -> Any:
    return schemathesis.openapi.from_url(gateway.url("/api/openapi.json"))


schema = schemathesis.pytest.from_fixture("api_schema")


def _check(case: Any, gateway: Platform, headers: dict[str, str]) -> None:
    response = case.call(headers=headers, timeout=10)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} → {response.status_code}: "
        f"{response.text[:300]}\n{gateway.log_tail('http')}"
    )


FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@FUZZ
def test_no_anonymous_request_gets_a_server_error(case: Any, gateway: Platform) -> None:
    _check(case, gateway, {})


@schema.parametrize()
@FUZZ
def test_no_admin_request_gets_a_server_error(case: Any, gateway: Platform) -> None:
    _check(case, gateway, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
