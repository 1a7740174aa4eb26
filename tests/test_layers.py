"""The package's shape: every import points down the layers, and no module is too long to read.

Reads the source (``ast``), runs nothing. The layers, bottom first, are README's Layout: a
module imports from its own layer and the layers below it, never from one above (an import
inside a function counts the same: it is still an arrow). The order is the one data and
control flow in: the PostgreSQL store at the bottom, the platform that starts everything and
the CLI at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pinpipe

PACKAGE = Path(pinpipe.__file__).parent

LAYERS = (
    {"config", "events", "errors", "placeholders", "processes"},  # settings, contracts, OS
    {"store"},  # PostgreSQL: schema, run records, read queries
    {"services"},  # broker, PostgreSQL server, Spark cluster, topics
    {"spark"},  # the Spark session helper the batch and speed layers share
    {"source"},  # the emulator's tables and clients
    {"lake"},  # Kafka -> raw Parquet, the ledger of the broker's logs
    {"ingest"},  # HTTP -> Kafka
    {"cleaning"},  # the one set of cleaning rules
    {"batch"},
    {"speed"},
    {"lakesql"},  # DuckDB over the lake and the speed layer's Delta tables
    {"serve"},  # the dashboard, speed-vs-batch comparison
    {"platform"},  # up, supervisor, demo
    {"cli", "__main__"},
)
MAX_LINES = 420  # "about 400": a module one can read in one sitting


def layer_of(module: str) -> int:
    """The layer of a dotted ``pinpipe.*`` module name (``pinpipe`` itself: the bottom)."""
    parts = module.split(".")
    if parts[-1] == "__main__":  # `python -m pinpipe.<package>`: an entry point, as the CLI is
        return len(LAYERS) - 1
    top = parts[1] if len(parts) > 1 else "config"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py (add it to LAYERS)")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = ("pinpipe", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every ``pinpipe`` module ``path`` imports, at any depth of the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return {module for module in found if module.split(".")[0] == "pinpipe"}


def sources(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """``"<importer> imports <imported>"`` for each import from a higher layer."""
    upward = []
    for path in sources(root):
        importer = module_name(path, root)
        for imported in sorted(imported_modules(path, root)):
            if layer_of(imported) > layer_of(importer):
                upward.append(f"{importer} imports {imported}")
    return upward


def test_every_import_points_down_the_layers():
    assert upward_imports() == []


def test_the_layer_rule_catches_an_upward_import(tmp_path):
    """The check itself can fail: a store module importing the batch layer, at function level
    and relatively, is reported; the batch layer importing the store is not."""
    (tmp_path / "store").mkdir()
    (tmp_path / "batch").mkdir()
    (tmp_path / "store" / "runs.py").write_text("def f():\n    from ..batch import job\n")
    (tmp_path / "batch" / "job.py").write_text("from pinpipe.store.runs import f\nimport pinpipe\n")
    assert upward_imports(tmp_path) == ["pinpipe.store.runs imports pinpipe.batch"]


def test_no_module_is_longer_than_one_sitting():
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in sources()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
