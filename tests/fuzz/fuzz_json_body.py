"""atheris target: JSON bodies and the moderation actions made from them (`targets.json_body`).

    python tests/fuzz/fuzz_json_body.py [corpus dirs or one input] [libFuzzer flags]

`make fuzz` runs it with the seeds in `tests/fuzz/corpus/json_body/`.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["gateway", "pipeline", "schemas", "tests.fuzz"]):
    from tests.fuzz.targets import json_body

if __name__ == "__main__":
    atheris.Setup(sys.argv, json_body)
    atheris.Fuzz()
