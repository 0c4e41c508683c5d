"""The import rules of ``shared/DESIGN.md``, checked on the source (no import is executed).

Imports run one way, downward: ``cli`` uses everything and nothing uses it; the fine-tune (``cv``,
``strategies/``, ``training/``) knows nothing of Optuna, storages or workers; ``spec`` imports nothing of the
project but ``exceptions`` and ``urls``, a leaf module of URL parsing and masking that itself imports nothing of
the project (the spec's URL-valued fields are masked by type, issue 23). A split module keeps to these rules only
if a test says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hft_search"
PURE = ("cv", "strategies", "training")
OPTUNA_SIDE = ("objective", "study", "workers", "storage")
SPEC_MAY_IMPORT = ("spec", "exceptions", "urls")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """The absolute module names ``path`` imports, at any depth (lazy imports inside functions count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _part(module: str) -> str:
    """The top-level part of the package a module belongs to (``hft_search.spec._space`` → ``spec``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = _modules()


def _project_imports(module: str) -> set[str]:
    return {name for name in _imports(MODULES[module]) if name.startswith("hft_search.")}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downward(module: str) -> None:
    part = _part(module)
    imported = _project_imports(module)
    if part != "cli":
        assert not {name for name in imported if _part(name) == "cli"}, f"{module} imports cli"
    if part in PURE:
        assert not {name for name in imported if _part(name) in OPTUNA_SIDE}, f"{module} imports the search side"
        assert not {name for name in _imports(MODULES[module]) if name.split(".")[0] == "optuna"}, \
            f"{module} imports optuna: a fine-tune is a pure function of model, data and settings"
    if part == "spec":
        assert {_part(name) for name in imported} <= set(SPEC_MAY_IMPORT), f"{module} imports {imported}"


def test_the_leaf_modules_spec_may_import_import_nothing_of_the_project() -> None:
    for leaf in ("hft_search.exceptions", "hft_search.urls"):
        assert not _project_imports(leaf), leaf
