"""The atheris scripts import atheris, which `make test` does not install: never collect them."""

collect_ignore_glob = ["fuzz_*.py", "run.py", "make_corpus.py"]
