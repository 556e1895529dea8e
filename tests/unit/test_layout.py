"""The package's shape (docs/architecture.md): modules stay small, each says its contract, and
dependencies point one way (api -> service -> apps/infra/live -> execution -> core)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "paas"
MAX_LINES = 400
# What each part may import from paas (besides itself and paas.contract).
ALLOWED = {
    "core": {"core"},
    "execution": {"core", "execution"},
    "infra": {"core", "execution", "infra"},
    "apps": {"core", "execution", "infra", "live", "apps"},
    "live": {"core", "execution", "infra", "apps", "live"},
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("paas."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("paas."))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small_and_documented(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    assert ast.get_docstring(ast.parse(text)), "a module's docstring is its contract"


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_dependencies_point_one_way(part: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / part).glob("*.py")):
        for module in _imports(path):
            target = module.split(".")[1]
            if target != "contract" and target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


def test_the_import_check_sees_imports() -> None:
    assert "paas.core.store" in _imports(PACKAGE / "core" / "workers.py")
