"""The machine a benchmark ran on, printed next to its figures.

`python -m bench.machine` prints it alone; benches call `describe()`.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

logger = logging.getLogger(__name__)


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


if __name__ == "__main__":
    print(describe())
