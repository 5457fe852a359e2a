"""The core library never imports the server side or the CLIs (scripts -> strategies -> fed_opc)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_fed_opc_never_imports_strategies_or_scripts():
    files = sorted((REPO / "fed_opc").rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(REPO)): sorted(_imports(f) & {"strategies", "scripts"}) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_strategies_never_import_scripts():
    files = sorted((REPO / "strategies").rglob("*.py"))
    bad = {str(f.relative_to(REPO)): sorted(_imports(f) & {"scripts"}) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_checker_sees_a_planted_import(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import os\nfrom strategies.x import y\n")
    assert "strategies" in _imports(p)
