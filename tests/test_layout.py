"""The house keeps its shape: imports flow one way, face -> methods -> models -> core (and
every tier may use featviz.errors); the old short module names give the same module objects;
no function grows past what a reader can hold."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import featviz

PACKAGE = Path(featviz.__file__).resolve().parent
TIERS = ["core", "models", "methods", "face"]  # each may import the ones before it


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The featviz modules ``path`` imports (relative imports resolved)."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
            found.update(n for n in names if n.startswith("featviz"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("featviz"))
    return found


def _tier(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TIERS else None


@pytest.mark.parametrize("tier", TIERS)
def test_imports_flow_one_way(tier):
    allowed = set(TIERS[:TIERS.index(tier) + 1])
    wrong = []
    for path in sorted((PACKAGE / tier).rglob("*.py")):
        for target in _imports(path):
            if target == "featviz.errors" or target.startswith("featviz.errors."):
                continue
            if _tier(target) not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert wrong == []


def test_short_names_are_the_same_modules():
    import featviz.param.color
    from featviz.hooks import LayerTap

    assert featviz.param.color is sys.modules["featviz.core.param.color"]
    assert LayerTap is featviz.core.hooks.LayerTap
    for short, full in featviz.SHORT_NAMES.items():
        assert sys.modules[f"featviz.{short}"] is sys.modules[f"featviz.{full}"]
        assert getattr(featviz, short) is sys.modules[f"featviz.{full}"]
    assert callable(featviz.render) and featviz.occlusion.occlusion is featviz.deconv.occlusion


def test_no_function_over_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({lines} lines)")
    assert long == []
