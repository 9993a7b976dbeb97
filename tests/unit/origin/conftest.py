"""The origin is tested through the app that serves it: the HTTP gateway's fixtures (a counting
LocalStore in tmp_path, the app, an in-process client) from `tests/unit/http/conftest.py`."""

from __future__ import annotations

from tests.unit.http.conftest import app, client, store

__all__ = ["app", "client", "store"]
