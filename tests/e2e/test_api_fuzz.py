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
from hypothesis import HealthCheck, given, settings

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


def _fuzz(gateway: Platform, headers: dict[str, str]) -> int:
    """Every operation of the gateway's OpenAPI document, `max_examples` generated requests
    each; returns how many operations were fuzzed."""
    schema = schemathesis.openapi.from_url(gateway.url("/api/openapi.json"))
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: Any) -> None:
            response = case.call(headers=headers, timeout=10)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} → {response.status_code}: "
                f"{response.text[:300]}\n{gateway.log_tail('http')}"
            )

        no_server_error()
    return len(operations)


def test_no_anonymous_request_gets_a_server_error(gateway: Platform) -> None:
    assert _fuzz(gateway, {}) >= 8


def test_no_admin_request_gets_a_server_error(gateway: Platform) -> None:
    assert _fuzz(gateway, {"Authorization": f"Bearer {ADMIN_TOKEN}"}) >= 8
