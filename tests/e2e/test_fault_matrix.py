"""Every role SIGKILLed in turn under one live stream, and nothing lost (`bench/faults.py`).

One real-time 720p30 stream through every role as its own process on the real Kafka and S3.
Killed with SIGKILL and started again, one at a time, each after the pipeline recovered from
the one before: every transcode worker, the packager ten times, the HTTP origin, the ingest
(its lease lapses and the restarted ingest ends the stream) and the VOD worker while it
builds. Then every rendition's playlist must list each sequence of the stream exactly once and
be ended, every segment must decode, the VOD must be complete, every fault must have been
recovered from (no packager hang), and no playlist request may have failed while the origin
was up. `make faults` runs the same with the table printed (and `--cluster` with a broker).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import Matrix, print_table, problems

pytestmark = pytest.mark.e2e

PACKAGER_KILLS = 10


def test_sigkill_of_every_role_in_turn_loses_nothing(tmp_path: Path, kafka_bootstrap: str) -> None:
    matrix = Matrix(tmp_path, kafka_bootstrap, settle_s=2.0, cluster=False)
    try:
        outcome = matrix.run(PACKAGER_KILLS)
        report = matrix.check(outcome)
    finally:
        matrix.stop()
    print_table(matrix, report)  # in the test's output, for the log
    killed = [fault.name for fault in matrix.faults]
    assert killed.count("package") == PACKAGER_KILLS
    assert {"ingest", "vod", "http", "transcode-720p60", "transcode-160p30"} <= set(killed)
    assert report["last_sequence"] >= 10, "the stream ran through the faults"
    assert problems(matrix, report) == [], "\n".join(
        f"--- {name}\n{matrix.platform.log_tail(name, 20)}" for name in ("ingest", "package")
    )
