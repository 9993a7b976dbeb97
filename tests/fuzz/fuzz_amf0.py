"""atheris target: AMF0 values (`targets.amf0_values`).

    python tests/fuzz/fuzz_amf0.py [corpus dirs or one input] [libFuzzer flags]

`make fuzz` runs it with the seeds in `tests/fuzz/corpus/amf0/`.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["gateway", "pipeline", "schemas", "tests.fuzz"]):
    from tests.fuzz.targets import amf0_values

if __name__ == "__main__":
    atheris.Setup(sys.argv, amf0_values)
    atheris.Fuzz()
