"""atheris target: user token verification (`targets.tokens`).

    python tests/fuzz/fuzz_tokens.py [corpus dirs or one input] [libFuzzer flags]

`make fuzz` runs it with the seeds in `tests/fuzz/corpus/tokens/`.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["gateway", "pipeline", "schemas", "tests.fuzz"]):
    from tests.fuzz.targets import tokens

if __name__ == "__main__":
    atheris.Setup(sys.argv, tokens)
    atheris.Fuzz()
