"""JSON objects from outside (HTTP bodies, WebSocket frames), refused unless they can be
written back out.

`json.loads` takes `"\\ud800"` and gives a `str` holding a lone surrogate, which no UTF-8
encoder accepts: stored in a record or echoed in a response it fails later, after the side
effects (a ban applied, then a 500 on every read of the moderation list). So a value is
checked whole when it comes in: JSON, an object, nested no deeper than the parser allows, and
every string (keys too) valid Unicode.

Numbers too: `json.loads` also takes `NaN`, `Infinity` and `1e400` (infinity), which are not
JSON (RFC 8259) and which no JSON response can carry (Starlette writes with
`allow_nan=False`), so they are refused as "not JSON".
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline.errors import InvalidJson


def parse_json_object(data: bytes | str) -> dict[str, Any]:
    """The JSON object in `data`; `InvalidJson` saying what is wrong otherwise."""
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise InvalidJson("not JSON") from None
    if not isinstance(value, dict):
        raise InvalidJson("not a JSON object")
    if not _all_text_encodable(value):
        raise InvalidJson("a string is not valid Unicode (lone surrogate)")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _all_text_encodable(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True
