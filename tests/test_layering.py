"""The core library never imports the server side or the CLIs (scripts -> strategies -> fed_opc); the federated
methods never import the run that calls them; the reporting package reads results only (no Flower, no training
code)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules(path: Path) -> set[str]:
    """The full names of the modules ``path`` imports (at any depth of the file, lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def test_fed_opc_never_imports_strategies_or_scripts():
    files = sorted((REPO / "fed_opc").rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(REPO)): sorted(_imports(f) & {"strategies", "scripts"}) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_strategies_never_import_scripts():
    files = sorted((REPO / "strategies").rglob("*.py"))
    bad = {str(f.relative_to(REPO)): sorted(_imports(f) & {"scripts"}) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_federated_methods_never_import_the_run():
    # the run's stages call the federated methods' serve functions, never the reverse
    files = sorted((REPO / "strategies" / "federated").rglob("*.py"))
    assert len(files) >= 8
    bad = {}
    for f in files:
        found = sorted(m for m in _modules(f) if m.startswith(("strategies.run", "strategies.reporting")))
        if found:
            bad[str(f.relative_to(REPO))] = found
    assert bad == {}


def test_reporting_imports_neither_flower_nor_training_code():
    # the report, summary and comparison read results.json content: they run without Flower, Ray or torch, and import
    # nothing of strategies outside their own package
    files = sorted((REPO / "strategies" / "reporting").rglob("*.py"))
    assert len(files) > 5
    forbidden = {"flwr", "ray", "torch", "torchvision", "fed_opc"}
    bad = {}
    for f in files:
        mods = _modules(f)
        found = sorted({m for m in mods if m.split(".")[0] in forbidden})
        found += sorted(m for m in mods if m.split(".")[0] == "strategies" and not m.startswith("strategies.reporting"))
        if found:
            bad[str(f.relative_to(REPO))] = found
    assert bad == {}


def test_checker_sees_a_planted_import(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import os\nfrom strategies.x import y\n")
    assert "strategies" in _imports(p) and "strategies.x" in _modules(p)
