"""The core library never imports the server side or the CLIs (scripts -> strategies -> fed_opc); the federated
methods never import the run that calls them; the reporting package reads results only (no Flower, no training
code); the core library reads the process environment in one module only."""

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


def _environment_uses(path: Path) -> list[str]:
    """How ``path`` touches the process environment: ``os.environ.<method>``, ``os.environ[...]``, ``os.getenv``."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if isinstance(inner.value, ast.Name) and inner.value.id == "os" and inner.attr == "environ":
                uses.append(f"os.environ.{node.attr}")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            v = node.value
            if isinstance(v.value, ast.Name) and v.value.id == "os" and v.attr == "environ":
                uses.append("os.environ[]")
        elif isinstance(node, ast.Attribute) and node.attr in ("getenv", "putenv") and isinstance(node.value, ast.Name):
            if node.value.id == "os":
                uses.append(f"os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            uses += [f"from os import {a.name}" for a in node.names if a.name in ("environ", "getenv")]
    return uses


def test_fed_opc_reads_the_environment_only_in_fed_opc_environment():
    # fed_opc/environment.py reads the project's variables (FED_OPC_*), called from the edge; fed_opc/flower.py only
    # sets defaults for the libraries it starts (Ray, Flower telemetry) before starting them
    allowed = {"fed_opc/environment.py": {"os.environ.get"}, "fed_opc/flower.py": {"os.environ.setdefault"}}
    found = {}
    for path in sorted((REPO / "fed_opc").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        uses = set(_environment_uses(path)) - allowed.get(rel, set())
        if uses:
            found[rel] = sorted(uses)
    assert found == {}


def test_environment_checker_sees_every_form(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom os import getenv\na = os.environ['X']\nb = os.getenv('Y')\nc = os.environ.get('Z')\n")
    assert sorted(_environment_uses(f)) == ["from os import getenv", "os.environ.get", "os.environ[]", "os.getenv"]
