"""The ```python blocks of a Markdown page, and what a block needs from the ones before it:
shared by the tests that run a page's blocks as a reader would paste them (tests/test_docs.py;
tests/test_readme.py does the same for README.md)."""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterable

# a block that runs: fenced ```python (a block fenced ```py shows the same, highlighted, and is
# not run: for code that needs what a test cannot have, a GPU or a download)
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every ```python block of ``text``."""
    return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def names(tree: ast.AST) -> tuple[set[str], list[ast.Name]]:
    """The names a block binds (assignments, imports, loops...) and the names it reads."""
    bound: set[str] = set()
    read: list[ast.Name] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound.add(node.id) if isinstance(node.ctx, ast.Store) else read.append(node))
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound, read


def undefined_names(blocks: Iterable[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """(line, names) for each block that reads a name no block before it (nor itself, nor
    Python) defines: blocks run in order in one session."""
    known = set(dir(builtins))
    missing = []
    for line, code in blocks:
        bound, read = names(ast.parse(code))
        known |= bound
        undefined = sorted({n.id for n in read if n.id not in known})
        if undefined:
            missing.append((line, undefined))
    return missing


def shrink(code: str, substitutions: Iterable[tuple[str, object]]) -> str:
    """``code`` with each (pattern, replacement) applied, where it matches."""
    for pattern, replacement in substitutions:
        code = re.sub(pattern, replacement, code)
    return code
