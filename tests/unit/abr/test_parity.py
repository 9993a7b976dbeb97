"""Python and JavaScript run the same live ABR controller: pipeline/abr/live.py and
gateway/http/static/abr.js are fed the same sequences of calls (random ones, and ones
recorded from simulated sessions) and must return the same thing at every step, to the bit."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.abr_media import Media
from bench.abr_sim import PARTS, SEGMENTS, Download, Progress, Regime, View, simulate
from pipeline.abr.live import LiveAbrController
from tests.unit.abr import synthetic

RUNNER = Path(__file__).with_name("parity.cjs")
BITRATES = [491_000, 1_036_000, 1_809_000, 4_864_000, 6_366_000]  # onair's, on the wire

Op = list[Any]


def replay_python(sequence: dict[str, Any]) -> list[list[Any]]:
    controller = LiveAbrController(
        sequence["bitrates"],
        chunk_s=sequence["chunk_s"],
        target_latency_s=sequence["target_latency_s"],
        blocking_reload=sequence.get("blocking_reload", False),
    )
    out: list[list[Any]] = []
    for op in sequence["ops"]:
        if op[0] == "sample":
            controller.add_sample(op[1], op[2], op[3])
            out.append([controller.estimate_bps(), controller.safe_bps(), controller.rtt_s()])
        elif op[0] == "choose":
            level = controller.choose(op[1], op[2], *op[3:4])
            out.append([level, controller.up_held_s, controller.since_down_s])
        elif op[0] == "abandon":
            out.append([controller.abandon(*op[1:]), controller.level])
        elif op[0] == "chunk":
            controller.chunk_s = op[1]
            out.append([controller.chunk_s])
    return out


def replay_node(sequences: list[dict[str, Any]]) -> list[list[list[Any]]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run(
        [node, str(RUNNER)],
        input=json.dumps(sequences),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[list[list[Any]]] = json.loads(proc.stdout)
    return result


def random_sequence(seed: int, chunk_s: float, target_latency_s: float) -> dict[str, Any]:
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(400):
        roll = rng.random()
        if roll < 0.45:
            duration = rng.choice([0.005, rng.uniform(0.02, 0.3), rng.uniform(0.3, 6.0)])
            ttfb = rng.choice([0.0, 0.1, rng.uniform(0.0, 0.5)])
            ops.append(["sample", rng.randint(0, 2_000_000), duration, ttfb])
        elif roll < 0.85:
            ops.append(["choose", rng.uniform(0, 8), rng.uniform(0.3, 40), rng.random() < 0.7])
        elif roll < 0.98:
            level = rng.randint(0, len(BITRATES) - 1)
            total = rng.randint(10_000, 2_000_000)
            loaded = rng.choice([0, rng.randint(1, total)])
            ops.append(["abandon", level, loaded, total, rng.uniform(0, 8), rng.uniform(0, 6)])
        else:
            ops.append(["chunk", rng.choice([0.5, 1.0, 2.0, 2.002])])
    return {
        "bitrates": BITRATES,
        "chunk_s": chunk_s,
        "target_latency_s": target_latency_s,
        "blocking_reload": rng.random() < 0.5,
        "ops": ops,
    }


def crafted_sequences() -> list[dict[str, Any]]:
    """Corners random calls rarely reach: a deep buffer tempting the plan above what the
    link sustains, a steady link, a collapse, a recovery, and abandons on either side."""
    ops: list[Op] = []
    for _ in range(6):  # 1 Mb/s steady: rung 1 (1.036 Mb/s) cannot keep up
        ops += [["sample", 250_000, 2.1, 0.1], ["choose", 25.0, 30.0]]
    for _ in range(8):  # 20 Mb/s: climb, one rung per hold
        ops += [["sample", 2_500_000, 1.1, 0.1], ["choose", 5.0, 6.0]]
    ops += [["abandon", 3, 100_000, 1_200_000, 1.5, 1.0], ["choose", 0.5, 9.0]]
    for _ in range(4):  # 150 kb/s: down, and abandons that do not pay
        ops += [["sample", 120_000, 6.5, 0.1], ["abandon", 1, 5_000, 250_000, 0.6, 4.0]]
        ops += [["choose", 0.0, 14.0]]
    return [
        {"bitrates": BITRATES, "chunk_s": 2.0, "target_latency_s": 30.0, "ops": ops},
        {"bitrates": BITRATES, "chunk_s": 0.5, "target_latency_s": 1.5, "ops": ops},
        {
            "bitrates": BITRATES,
            "chunk_s": 0.2,
            "target_latency_s": 0.6,
            "blocking_reload": True,
            "ops": [op if op[0] != "choose" else [*op, n % 3 == 0] for n, op in enumerate(ops)],
        },
    ]


class Recorder:
    """onair's controller in the simulator, writing down every call the player makes."""

    def __init__(self, media: Media, regime: Regime) -> None:
        self.bitrates = [r.average_bps for r in media.rungs]
        self.regime = regime
        self.abr = LiveAbrController(
            self.bitrates,
            chunk_s=regime.chunk_s,
            target_latency_s=regime.target_latency_s,
            blocking_reload=regime.parts,
        )
        self.ops: list[Op] = []
        RECORDINGS.append(self)

    def choose(self, view: View) -> int:
        self.ops.append(["choose", view.buffer_s, view.latency_s])
        return self.abr.choose(view.buffer_s, view.latency_s)

    def downloaded(self, download: Download, view: View) -> None:
        op: Op = [
            "sample",
            download.size_bytes,
            download.done_s - download.request_s,
            download.first_byte_s - download.request_s,
        ]
        self.ops.append(op)
        self.abr.add_sample(*op[1:])

    def abandon(self, p: Progress) -> int | None:
        op: Op = ["abandon", p.level, p.loaded_bytes, p.total_bytes, p.now_s - p.request_s]
        op.append(p.buffer_s)
        self.ops.append(op)
        return self.abr.abandon(*op[1:])

    def delay_s(self) -> float:
        return 0.0

    def stalled(self) -> None:
        pass

    def bitrate_test(self) -> bool:
        return False

    def sequence(self) -> dict[str, Any]:
        return {
            "bitrates": self.bitrates,
            "chunk_s": self.regime.chunk_s,
            "target_latency_s": self.regime.target_latency_s,
            "blocking_reload": self.regime.parts,
            "ops": self.ops,
        }


RECORDINGS: list[Recorder] = []


def recorded_sequences() -> list[dict[str, Any]]:
    """Sessions on a bursty synthetic 3G-like trace (seeded), in both regimes."""
    rng = random.Random(7)
    steps = [
        (rng.uniform(0.5, 4), rng.choice([0, 150, 400, 900, 1500, 2500, 6000])) for _ in range(200)
    ]
    network = synthetic.trace("bursty", *steps)
    RECORDINGS.clear()
    for regime in (SEGMENTS, PARTS):
        simulate(synthetic.media(), network, regime, Recorder, 240)
    return [r.sequence() for r in RECORDINGS]


def test_python_and_javascript_decide_alike_on_random_calls() -> None:
    sequences = [
        random_sequence(seed, chunk_s, latency)
        for seed, (chunk_s, latency) in enumerate([(2.0, 6.0), (0.5, 1.5), (2.0, 3.0), (1.0, 4.0)])
    ]
    assert replay_node(sequences) == [replay_python(s) for s in sequences]


def test_python_and_javascript_decide_alike_in_corners() -> None:
    sequences = crafted_sequences()
    python = [replay_python(s) for s in sequences]
    chosen = [
        r[0] for op, r in zip(sequences[0]["ops"], python[0], strict=True) if op[0] == "choose"
    ]
    assert chosen[:6] == [0] * 6  # the deep buffer did not buy an unsustainable rung
    assert max(chosen) >= 3 and chosen[-1] == 0
    assert replay_node(sequences) == python


def test_python_and_javascript_decide_alike_on_recorded_sessions() -> None:
    sequences = recorded_sequences()
    assert all(len(s["ops"]) > 300 for s in sequences)
    ops = [op[0] for s in sequences for op in s["ops"]]
    assert {"sample", "choose", "abandon"} <= set(ops)
    python = [replay_python(s) for s in sequences]
    levels = {
        r[0]
        for s, out in zip(sequences, python, strict=True)
        for op, r in zip(s["ops"], out, strict=True)
        if op[0] == "choose"
    }
    assert len(levels) >= 3  # the sessions moved across the ladder
    assert replay_node(sequences) == python
