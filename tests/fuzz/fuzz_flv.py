"""atheris target: FLV tags, AVC/AAC configuration, FLV to media (`targets.flv`).

    python tests/fuzz/fuzz_flv.py [corpus dirs or one input] [libFuzzer flags]

`make fuzz` runs it with the seeds in `tests/fuzz/corpus/flv/`.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["gateway", "pipeline", "schemas", "tests.fuzz"]):
    from tests.fuzz.targets import flv

if __name__ == "__main__":
    atheris.Setup(sys.argv, flv)
    atheris.Fuzz()
