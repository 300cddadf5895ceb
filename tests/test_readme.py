"""Every ```python block of README.md runs as pasted.

The blocks run in order in one session, as a reader pasting them one after the other into one
Python prompt would (later blocks use the ``model`` and ``img`` of earlier ones), each in a
temporary working directory, with the README's figures made small (steps, image sizes, sample
counts: see ``SMALL``). They load the real MobileNetV2 weights, so they run where
``../shared/models`` holds them and skip with the reason otherwise (markers ``real`` and
``slow``); a static check that every name a block uses is defined by then runs everywhere.
"""

from __future__ import annotations

import ast
import builtins
import re

import pytest
from conftest import REPO, SHARED, needs_weights

TEXT = (REPO / "README.md").read_text()
BLOCKS = [(TEXT[:m.start()].count("\n") + 1, m.group(1))  # (line in README.md, code)
          for m in re.finditer(r"^```python\n(.*?)^```", TEXT, re.M | re.S)]

# the README's own figures -> small ones; each (pattern, replacement) must still match, so a
# README edit that escapes them fails here instead of making this test slow
SMALL = [
    (r"\bsteps=\d+", "steps=2"),
    (r"\bsize=224\b", "size=64"),  # images.load(..., size=224) and input_size=224
    (r"\bsamples=\d+", "samples=2"),
    (r"\bchannels=range\(8\), k=9\b", "channels=range(2), k=2, size=64"),
    # calls that take the library's (large) defaults: give them small ones
    (r"\b(invert_layers|caricature)\(model, img, ", r"\1(model, img, steps=2, "),
    (r"\b(invert|invert_layers|caricature)\(model, img, ", r"\1(model, img, size=64, "),
    # matplotlib takes minutes on 2 cores to draw the histograms of all ~150 layers
    (r"capture\(model, img, layers=\"all\"\)",
     'capture(model, img, layers=["features.4", "features.7"])'),
    (r"\beffective_layers\(model, ", "effective_layers(model, samples=2, input_size=64, "),
    # the theoretical field of features.14 takes a float64 MobileNetV2 on a 512-px input
    (r'"features.7", "features.14"\]\)\.plot', '"features.7"]).plot'),
    # top-k over the 1000 labelled photos: over the ten sample photos instead
    (r"\.\./shared/imagenet-sample\", layer=", '../shared/images", layer='),
    (r"\.\./shared/", lambda _: f"{SHARED}/"),  # a function: the path is no regex template
]


def small(code: str) -> str:
    """``code`` with the substitutions of ``SMALL`` applied."""
    for pattern, replacement in SMALL:
        code = re.sub(pattern, replacement, code)
    return code


def test_the_readme_has_python_blocks_and_every_substitution_applies():
    text = "\n".join(code for _, code in BLOCKS)
    assert len(BLOCKS) >= 5
    unused = [pattern for pattern, _ in SMALL if not re.search(pattern, text)]
    assert not unused, f"SMALL patterns that match no README block: {unused}"


def _names(tree: ast.AST) -> tuple[set[str], list[ast.Name]]:
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


def test_every_name_a_block_uses_is_defined_by_then():
    known = set(dir(builtins))
    for line, code in BLOCKS:
        bound, read = _names(ast.parse(code))
        known |= bound
        undefined = sorted({n.id for n in read if n.id not in known})
        assert not undefined, f"README.md block at line {line} uses undefined {undefined}"


@pytest.fixture(scope="module")
def session() -> dict:
    """The one Python session the blocks run in, and how many blocks it has run."""
    return {"namespace": {"__name__": "__readme__"}, "done": 0}


@needs_weights
@pytest.mark.slow  # a few CPU-minutes: the theoretical receptive fields run a float64 MobileNetV2
@pytest.mark.parametrize("index", range(len(BLOCKS)),
                         ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block_runs(index, session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # blocks before this one first (when run alone, or after one failed), then this one
    for i in range(session["done"], index + 1):
        line, code = BLOCKS[i]
        exec(compile(small(code), f"README.md block at line {line}", "exec"),
             session["namespace"])
        session["done"] = i + 1
