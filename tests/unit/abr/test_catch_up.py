"""The low-latency player's catch-up (gateway/http/static/abr.js `catchUpRate`, run in node):
behind its target latency it plays faster, never faster than 1.2x, never while fewer than three
parts are buffered, and not at all on target or when the viewer is far behind on purpose (a
stall that left it far behind is caught up)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ABR_JS = Path(__file__).resolve().parents[3] / "gateway" / "http" / "static" / "abr.js"
PART, SEGMENT, TARGET = 0.2, 2.0, 0.6

# (latency, target, buffer, part, segment, held back by the viewer) → rate
CASES = [
    ((2.0, TARGET, 1.3, PART, SEGMENT, False), 1.2),  # 1.4 s behind, buffer to spare: full speed
    ((1.2, TARGET, 0.7, PART, SEGMENT, False), 1.12),  # 0.6 s behind: in proportion
    ((0.9, TARGET, 0.65, PART, SEGMENT, False), 1.06),  # 0.3 s behind: in proportion
    ((1.2, TARGET, 0.59, PART, SEGMENT, False), 1.0),  # under three parts buffered: no faster
    ((0.65, TARGET, 0.7, PART, SEGMENT, False), 1.0),  # within half a part of the target
    ((0.5, TARGET, 0.3, PART, SEGMENT, False), 1.0),  # ahead of it
    ((4.0, TARGET, 3.0, PART, SEGMENT, True), 1.0),  # paused or seeked back that far: the viewer's
    ((4.0, TARGET, 3.0, PART, SEGMENT, False), 1.2),  # a stall left it that far: catch up
    ((3.42, 0.8, 1.0, PART, 1.0, False), 1.2),  # bench.glass after a 2.4 s stall, 1 s segments
    ((1.2, TARGET, 0.7, PART, SEGMENT, True), 1.12),  # held back, but within a segment: catch up
    ((1.2, TARGET, 0.7, 0.0, SEGMENT, False), 1.0),  # no parts: not low latency
    ((0.0, TARGET, 0.7, PART, SEGMENT, False), 1.0),  # no latency known yet
    ((2.0, 1.0, 1.6, 0.5, 4.0, False), 1.2),  # other part and segment targets
]


def run_abr_js(function: str, cases: list[tuple[tuple[Any, ...], Any]]) -> list[Any]:
    """abr.js's `function` applied in node to the arguments of every case."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = (
        f"const {{ {function} }} = require({json.dumps(str(ABR_JS))});"
        f"const cases = {json.dumps([list(args) for args, _ in cases])};"
        f"console.log(JSON.stringify(cases.map((c) => {function}(...c))));"
    )
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True)
    result: list[Any] = json.loads(out.stdout)
    return result


def test_catch_up_rate() -> None:
    assert run_abr_js("catchUpRate", CASES) == [rate for _, rate in CASES]
