"""JSON from outside: one object, every string valid Unicode, or InvalidJson."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        (b'{"seconds": NaN}', "not JSON"),
        (b'{"ttl_s": -Infinity}', "not JSON"),
        (b'{"a": [1e400]}', "not JSON"),
    ],
    ids=[
        *("garbage", "bad-utf8", "list", "string", "value", "key", "nested", "deep"),
        *("nan", "infinity", "overflow"),
    ],
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


# -- fuzzed ------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None)

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def writable(value: Any) -> bytes:
    """What a response does with a parsed value (Starlette's `JSONResponse.render`)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


literals = st.sampled_from(
    ["NaN", "-Infinity", "Infinity", "1e400", "-1e999", "1" * 5000, "-0", "0.5", "null", "[]"]
)
json_like = st.lists(
    st.one_of(
        literals, st.from_regex(r"-?[0-9]{1,3}(\.[0-9]+)?(e[+-]?[0-9]{1,4})?", fullmatch=True)
    ),
    min_size=1,
    max_size=3,
).map(lambda values: "{" + ",".join(f'"k{i}":{v}' for i, v in enumerate(values)) + "}")


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode), json_like))
def test_anything_is_refused_or_an_object_that_writes_back(data: bytes) -> None:
    try:
        value = parse_json_object(data)
    except InvalidJson:
        return
    assert isinstance(value, dict)
    assert writable(parse_json_object(writable(value))) == writable(value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.booleans())
def test_objects_round_trip(value: dict[str, Any], ascii_only: bool) -> None:
    assert parse_json_object(json.dumps(value, ensure_ascii=ascii_only)) == value


escapes = st.lists(
    st.one_of(
        st.sampled_from(["a", "\\n", "\\u00e9", "\\ud83d", "\\ude00", "\\uDBFF", "\\uDC00"]),
        st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}"),
    ),
    max_size=8,
)


def _surrogate(piece: str) -> str | None:
    if not piece.startswith("\\u"):
        return None
    code = int(piece[2:], 16)
    if 0xD800 <= code <= 0xDBFF:
        return "high"
    return "low" if 0xDC00 <= code <= 0xDFFF else None


def has_lone_surrogate(pieces: list[str]) -> bool:
    """The model: a high surrogate escape directly followed by a low one is a pair (one
    character); every other surrogate escape stands alone."""
    i = 0
    while i < len(pieces):
        kind = _surrogate(pieces[i])
        if kind == "high" and i + 1 < len(pieces) and _surrogate(pieces[i + 1]) == "low":
            i += 2
            continue
        if kind is not None:
            return True
        i += 1
    return False


@FUZZ
@given(escapes, st.booleans())
def test_refused_exactly_when_a_surrogate_is_alone(pieces: list[str], in_key: bool) -> None:
    text = "".join(pieces)
    body = f'{{"{text}": 1}}' if in_key else f'{{"title": ["{text}"]}}'
    if has_lone_surrogate(pieces):
        with pytest.raises(InvalidJson, match="lone surrogate"):
            parse_json_object(body)
    else:
        writable(parse_json_object(body))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(['{"a":', "[", '{"b":[']), min_size=1, max_size=3000))
def test_deep_nesting_is_refused_or_parsed_never_a_recursion_error(opening: list[str]) -> None:
    closing = {'{"a":': "}", "[": "]", '{"b":[': "]}"}
    data = "".join(opening) + "1" + "".join(closing[o] for o in reversed(opening))
    try:
        value = parse_json_object(data)
    except InvalidJson:
        return
    assert isinstance(value, dict) and opening[0] != "["
