"""Every arrow points down: a package imports only the floors below it.

    onair        the CLI and `onair up`'s supervisor          (imports anything)
    gateway      the edges: RTMP ingest, HTTP origin/API/chat  ─┐ topics, schemas,
    workers      transcode, packager, VOD, rebuild             ─┘ objectstore, pipeline
    topics       topic specs, Kafka clients and readers        → schemas, pipeline
    objectstore  the S3 store and `open_store`                 → pipeline
    schemas      Avro schemas and codec                        → pipeline
    pipeline     the domain (with the store interface)         → nothing of ours

and the domain imports no Kafka, boto3, PyAV or Starlette. Lazy imports inside functions
count too: the graph is read from every `import` statement in the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "onair": {"onair", "gateway", "workers", "topics", "objectstore", "schemas", "pipeline"},
    "gateway": {"gateway", "topics", "objectstore", "schemas", "pipeline"},
    "workers": {"workers", "topics", "objectstore", "schemas", "pipeline"},
    "topics": {"topics", "schemas", "pipeline"},
    "objectstore": {"objectstore", "pipeline"},
    "schemas": {"schemas", "pipeline"},
    "pipeline": {"pipeline"},
}
IO_LIBRARIES = {
    "confluent_kafka", "boto3", "botocore", "av", "starlette", "uvicorn", "hypercorn", "faust"
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules() -> dict[str, set[str]]:
    found = {}
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[module] = _imports(path)
    return found


def test_every_package_imports_only_the_floors_below_it() -> None:
    wrong = []
    for module, imported in _modules().items():
        floor = module.split(".")[0]
        for name in sorted(imported):
            top = name.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[floor]:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "lower layers import higher ones:\n" + "\n".join(wrong)


def test_the_domain_imports_no_io_library() -> None:
    wrong = []
    for module, imported in _modules().items():
        if module.split(".")[0] != "pipeline":
            continue
        for name in sorted(imported):
            if name.split(".")[0] in IO_LIBRARIES:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "the domain imports I/O libraries:\n" + "\n".join(wrong)


MAX_MODULE_LINES = 500


def test_every_module_says_what_it_owns_and_stays_small() -> None:
    """Each module opens with a docstring and stays under ~500 lines (a newcomer reads one
    module for one job)."""
    wrong = []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            name = path.relative_to(ROOT).as_posix()
            if not ast.get_docstring(ast.parse(source, name)):
                wrong.append(f"{name}: no opening docstring")
            lines = len(source.splitlines())
            if lines > MAX_MODULE_LINES:
                wrong.append(f"{name}: {lines} lines")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The reader finds lazy imports inside functions (a check that cannot fail is none)."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from gateway.http import app\n    import workers.vod\n")
    assert _imports(path) == {"gateway.http", "workers.vod"}
