from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from objectstore import open_store
from objectstore.s3 import S3Store
from tests.conftest import S3Config
from tests.store_contract import *  # noqa: F403  (the shared contract suite)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3_config: S3Config) -> Iterator[S3Store]:
    """The real S3 server, under a prefix of its own so runs never see each other."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    store = open_store(
        f"s3://{s3_config.bucket}/{prefix}",
        endpoint_url=s3_config.endpoint,
        access_key=s3_config.access_key,
        secret_key=s3_config.secret_key,
    )
    assert isinstance(store, S3Store)
    yield store
    for key in store.list(""):
        store.delete(key)
