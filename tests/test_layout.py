"""The package layout of docs/architecture.md holds: every import between the packages of dim/
points down the table there (no cycles, nothing importing the orchestrator or the CLIs), and
beside the packages sit only the three shared modules."""

from __future__ import annotations

import ast
from pathlib import Path

import dim

ROOT = Path(dim.__file__).parent

# package -> the packages it may import (docs/architecture.md); every one may import errors
ALLOWED = {
    "cli": {"training", "monitor", "eval", "methods", "mine", "data", "objective", "run", "nets"},
    "training": {"monitor", "methods", "data", "run"},
    "monitor": {"eval", "run"},
    "eval": {"mine", "data", "nets", "objective", "run"},
    "methods": {"objective", "nets", "run"},
    "mine": {"objective", "nets", "run"},
    "data": set(),
    "objective": {"nets"},
    "run": {"nets"},
    "nets": set(),
    "__init__": set(),  # the public API imports lazily by module path (checked below)
    "errors": set(),
}


def _imports(path: Path) -> set[str]:
    """The dim.* modules ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "dim" or m.startswith("dim.")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_only_the_shared_modules_are_loose():
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert loose == ["__init__.py", "errors.py", "training.py"]
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert set(packages) - {"configs"} == set(ALLOWED) - {"training", "__init__", "errors"}


def test_every_import_between_packages_points_down():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for module in _imports(path):
            target = _unit(module)
            if target in (unit, "errors") or module == "dim":
                continue
            if target not in ALLOWED[unit]:
                wrong.append(f"{rel} imports {module}")
    assert wrong == []


def test_the_public_api_resolves():
    assert callable(dim.build_encoder) and callable(dim.load_encoder)
    assert callable(dim.estimate_mi) and issubclass(dim.DimError, Exception)
