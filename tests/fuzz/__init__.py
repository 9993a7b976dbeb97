"""Coverage-guided fuzzing with atheris: `make fuzz` (not part of `make test`).

- `targets.py`: one function per parser family, bytes in, invariants checked (plain Python;
  `tests/unit/test_fuzz_corpus.py` replays every committed seed through them in `make test`).
- `fuzz_<target>.py`: the atheris scripts, one per target (`atheris.Setup` / `Fuzz`).
- `corpus/<target>/`: committed seeds, written by `make_corpus.py` from real ffmpeg and
  OBS-like publishes; new inputs libFuzzer finds go to `.cache/fuzz/corpus/<target>/`.
- `run.py`: what `make fuzz` runs: every target for `FUZZ_SECONDS`, crashes to
  `.cache/fuzz/crashes/<target>/`, a summary, non-zero exit on a crash.

None of these modules is collected by pytest (`conftest.py`); the scripts need atheris.
"""
