from __future__ import annotations

from pathlib import Path

import pytest

from objectstore import open_store
from objectstore.local import LocalStore
from tests.store_contract import *  # noqa: F403  (the shared contract suite)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_open_store_picks_local_for_paths(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)


def test_sidecar_metadata_is_not_listed(store: LocalStore) -> None:
    store.put("a/1.ts", b"x", content_type="video/mp2t", cache_control="c")
    assert store.list("") == ["a/1.ts"]
