"""JSON from outside: one object, every string valid Unicode, or InvalidJson."""

from __future__ import annotations

import pytest

from pipeline.errors import InvalidJson
from pipeline.jsonbody import parse_json_object


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b'{"title": "\\ud800"}', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),
        (b'{"a": [{"b": ["ok", "\\ud83d"]}]}', "lone surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
    ids=["garbage", "bad-utf8", "list", "string", "value", "key", "nested", "deep"],
)
def test_refused(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidJson, match=problem):
        parse_json_object(data)


@pytest.mark.parametrize(
    "data",
    [b"{}", b'{"title": "caf\\u00e9 \\ud83d\\ude00"}', '{"t": "日本"}'],
    ids=["empty", "surrogate-pair", "str"],
)
def test_accepted(data: bytes | str) -> None:
    value = parse_json_object(data)
    assert isinstance(value, dict)
    for text in value.values():
        text.encode("utf-8")
