"""atheris target: Avro single-object decoding (`targets.avro`).

    python tests/fuzz/fuzz_avro.py [corpus dirs or one input] [libFuzzer flags]

`make fuzz` runs it with the seeds in `tests/fuzz/corpus/avro/`.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["gateway", "pipeline", "schemas", "tests.fuzz"]):
    from tests.fuzz.targets import avro

if __name__ == "__main__":
    atheris.Setup(sys.argv, avro)
    atheris.Fuzz()
