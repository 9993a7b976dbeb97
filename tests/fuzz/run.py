"""Run every atheris target for a bounded time; report; exit non-zero on a crash.

    python -m tests.fuzz.run [--seconds 60] [--out .cache/fuzz] [target ...]

What `make fuzz` runs (`FUZZ_SECONDS`, `FUZZ_TARGETS`). Per target, one after another (the
machine is shared): libFuzzer gets `.cache/fuzz/corpus/<target>/` (where it keeps what it
finds, across runs) and the committed seeds, writes crash, timeout and out-of-memory inputs
to `.cache/fuzz/crashes/<target>/` and its log to `.cache/fuzz/logs/<target>.log`. An input
that takes more than `--input-timeout` seconds counts as a crash: a parser of outside bytes
must answer quickly whatever it is fed.

To reproduce a crash: `python tests/fuzz/fuzz_<target>.py .cache/fuzz/crashes/<target>/<file>`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.targets import MAX_LEN, TARGETS

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")


@dataclass
class Result:
    target: str
    exit_code: int
    seconds: float
    executions: int
    per_second: int
    new_units: int
    crashes: list[Path]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.crashes


def _stat(log: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s+(\d+)", log)
    return int(found[-1]) if found else 0


def run_target(target: str, seconds: int, out: Path, input_timeout_s: int) -> Result:
    work = out / "corpus" / target
    crashes = out / "crashes" / target
    logs = out / "logs"
    for directory in (work, crashes, logs):
        directory.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    cmd = [
        sys.executable,
        str(HERE / f"fuzz_{target}.py"),
        str(work),
        str(HERE / "corpus" / target),
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN.get(target, 4096)}",
        f"-timeout={input_timeout_s}",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    log_path = logs / f"{target}.log"
    with log_path.open("w") as log_file:
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=seconds + 300,
            check=False,
        )
    elapsed = time.monotonic() - started
    log = log_path.read_text(errors="replace")
    found = sorted(p for p in set(crashes.iterdir()) - before if ARTIFACT.match(p.name))
    return Result(
        target,
        done.returncode,
        elapsed,
        _stat(log, "number_of_executed_units"),
        _stat(log, "average_exec_per_sec"),
        _stat(log, "new_units_added"),
        found,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "fuzz")
    parser.add_argument("--input-timeout", type=int, default=10, help="seconds per input")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if importlib.util.find_spec("atheris") is None:
        print("fuzz: atheris is not installed in this Python; `make fuzz` installs it")
        return 2
    targets = args.targets or sorted(TARGETS)
    results = []
    for target in targets:
        print(f"fuzz: {target}: {args.seconds} s ...", flush=True)
        result = run_target(target, args.seconds, args.out, args.input_timeout)
        results.append(result)
        for crash in result.crashes:
            print(f"fuzz: {target}: CRASH {crash}")
            print(f"      reproduce: python tests/fuzz/fuzz_{target}.py {crash}")
        if result.exit_code != 0 and not result.crashes:
            print(f"fuzz: {target}: exited {result.exit_code}, see {args.out}/logs/{target}.log")
    print(f"\n{'target':<10} {'seconds':>7} {'executions':>11} {'exec/s':>7} {'new':>5}  result")
    for r in results:
        verdict = "ok" if r.ok else f"FAILED ({len(r.crashes)} crash inputs, exit {r.exit_code})"
        print(
            f"{r.target:<10} {r.seconds:>7.0f} {r.executions:>11} {r.per_second:>7} "
            f"{r.new_units:>5}  {verdict}"
        )
    print(f"logs and crash inputs: {args.out}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
