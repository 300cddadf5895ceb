"""The house keeps its shape: imports flow one way, face -> methods -> models -> core (and
every tier may use featviz.errors and the version, featviz.__version__), with no import cycles;
the short module names give the same module objects and are imported only when used; no
function or module grows past what a reader can hold."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import featviz

PACKAGE = Path(featviz.__file__).resolve().parent
TIERS = ["core", "models", "methods", "face"]  # each may import the ones before it
MAX_FUNCTION_LINES = 60  # docstring aside
MAX_MODULE_LINES = 500
# the short names that worked before they were derived from the folders; they must keep working
KNOWN_SHORT_NAMES = [
    "hooks", "backward_rules", "truncate", "objectives", "transforms", "images", "metrics",
    "markdown", "param", "deconv", "dataset", "occlusion", "inversion", "receptive_field",
    "featuremaps", "groups", "attribution", "activation_grid", "semantic_dictionary",
    "building_blocks", "atlas_store", "atlas", "cli", "sweep", "gallery", "blocks_page",
    "atlas_page", "display", "cifar",
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in (
        "TYPE_CHECKING", "typing.TYPE_CHECKING")


def _nodes(tree: ast.AST, runtime_only: bool) -> Iterator[ast.AST]:
    """Every node of ``tree`` (function bodies included); with ``runtime_only`` the bodies of
    ``if TYPE_CHECKING:`` are left out, since they never run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if runtime_only and _type_checking_only(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path, runtime_only: bool = False) -> set[str]:
    """The featviz names ``path`` imports, relative imports resolved: the module of each
    statement and, for ``from M import x``, also ``M.x`` (x may be a submodule)."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
    found = set()
    for node in _nodes(ast.parse(path.read_text()), runtime_only):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            found.update(n for n in names + [target] * bool(node.module) if n.startswith("featviz"))
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
            if (target in ("featviz.errors", "featviz.__version__")
                    or target.startswith("featviz.errors.")):
                continue
            if _tier(target) not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert wrong == []


def _import_graph() -> dict[str, set[str]]:
    """featviz module -> the featviz modules it imports when it runs (imports inside functions
    count; ``if TYPE_CHECKING:`` ones do not). A name is resolved to its longest prefix that is
    a module, through the short names (``featviz.hooks`` -> ``featviz.core.hooks``)."""
    paths = {_module(p): p for p in PACKAGE.rglob("*.py")}
    aliases = {**featviz.SHORT_NAMES, "render": "core.render"}  # featviz.render: the function

    def resolve(name: str) -> str:
        parts = name.split(".")
        if len(parts) > 1 and parts[1] in aliases:
            name = ".".join(["featviz", aliases[parts[1]], *parts[2:]])
        while name not in paths:
            name = name.rsplit(".", 1)[0]
        return name

    return {module: {resolve(t) for t in _imports(path, runtime_only=True)} - {module}
            for module, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _cycle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import cycle inside ``component``, from its first module back to it (breadth-first,
    so the shortest)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"{component} is not strongly connected")


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert _cycle_through(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = _import_graph()
    cycles = [f"{' -> '.join(_cycle_through(graph, c))}; the cycles join {', '.join(c)}"
              for c in _cycles(graph)]
    assert not cycles, "\n".join(cycles)


def test_short_names_are_the_same_modules():
    import featviz.param.color
    from featviz.hooks import LayerTap

    assert featviz.param.color is sys.modules["featviz.core.param.color"]
    assert LayerTap is featviz.core.hooks.LayerTap
    assert set(KNOWN_SHORT_NAMES) <= set(featviz.SHORT_NAMES)
    for short, full in featviz.SHORT_NAMES.items():
        module = importlib.import_module(f"featviz.{full}")
        assert importlib.import_module(f"featviz.{short}") is module
        assert sys.modules[f"featviz.{short}"] is module
        assert getattr(featviz, short) is module
        assert module.__spec__.name == f"featviz.{full}"  # the alias does not rename it
    assert callable(featviz.render) and featviz.occlusion.occlusion is featviz.deconv.occlusion


def test_render_models_and_core_keep_their_meaning():
    import featviz.render.loop  # the module, by its short name; featviz.render stays the function

    assert callable(featviz.render) and featviz.render is featviz.core.render.render
    assert sys.modules["featviz.render"] is featviz.core.render
    assert featviz.render.__module__ == "featviz.core.render"
    assert sys.modules["featviz.render.loop"] is sys.modules["featviz.core.render.loop"]
    assert featviz.models is sys.modules["featviz.models"] and hasattr(featviz.models, "load")
    with pytest.raises(AttributeError):
        featviz.no_such_module  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("featviz.gallery.no_such_module")


def test_short_names_are_unambiguous():
    """A module name in two tiers would give its short name to one of them silently."""
    seen: dict[str, list[str]] = {}
    for tier in ("core", "methods", "face"):
        for path in sorted((PACKAGE / tier).iterdir()):
            module = path.suffix == ".py" or (path / "__init__.py").exists()
            if module and not path.name.startswith("_"):
                seen.setdefault(path.stem, []).append(tier)
    assert {name: tiers for name, tiers in seen.items() if len(tiers) > 1} == {}


@pytest.mark.heavy
def test_import_featviz_leaves_the_upper_tiers_alone():
    code = ("import sys, featviz; print(' '.join(m for m in sys.modules "
            "if m.startswith(('featviz.face', 'featviz.methods', 'featviz.models'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=PACKAGE.parent).stdout.split()
    assert loaded == []


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_over_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and (lines := _body_lines(node)) > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({lines} lines)")
    assert not long, "\n".join(long)


def test_no_module_over_500_lines():
    long = [f"{path.relative_to(PACKAGE)} ({lines} lines)"
            for path in sorted(PACKAGE.rglob("*.py"))
            if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "\n".join(long)


def _names_bound_by_imports(init: Path) -> set[str]:
    """The names a package's ``__init__.py`` binds with ``from .x import name``."""
    tree = ast.parse(init.read_text())
    return {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.level == 1 and node.module for a in node.names}


def test_no_submodule_shadows_a_name_its_package_imports():
    """Importing ``pkg.x`` sets the attribute ``pkg.x`` to the module: a function ``x`` that
    ``pkg/__init__.py`` imported from elsewhere would be replaced by it from then on."""
    clashes = []
    for init in PACKAGE.rglob("__init__.py"):
        subs = {p.stem for p in init.parent.glob("*.py")} | {
            p.name for p in init.parent.iterdir() if (p / "__init__.py").is_file()}
        bound = _names_bound_by_imports(init)
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                bound -= {a.asname or a.name for a in node.names
                          if (a.asname or a.name) == node.module.split(".")[0]}
        clashes += [f"{init.parent.relative_to(PACKAGE)}/{n}" for n in sorted(bound & subs)]
    assert clashes == []
