"""The machine a benchmark ran on, printed next to its figures, and the one tool benches build
on it (`build_go`, for their Go references and helpers).

`python -m bench.machine` prints it alone; benches call `describe()`.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def describe() -> str:
    """One line: cores usable / online, CPU model, load average, OS and Python."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{usable_cores()} cores usable ({os.cpu_count()} online), {cpu_model()}; "
        f"load avg {load}; {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def build_go(work: Path, source: Path) -> Path:
    """Compile one Go file of bench/ into `work`; the binary's path (its build cache is the
    repo's .cache/go-build, so a second run builds nothing)."""
    binary = work / source.stem
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(ROOT / ".cache" / "go-build")}
    subprocess.run(["go", "build", "-o", str(binary), str(source)], check=True, env=env,
                   cwd=work, timeout=300)  # fmt: skip
    return binary


if __name__ == "__main__":
    print(describe())
