"""The README: short, its set-up commands first, its links alive, and every ```python block of
it running as pasted.

The blocks run in order in one session, as a reader pasting them one after the other into one
Python prompt would (later blocks use the names of earlier ones), each in a temporary working
directory, with ``FEATVIZ_MODELS`` naming ``../shared/models`` (where ``load("inceptionv1")``
finds its weights, so nothing is downloaded) and with the figures made small (``SMALL``). They
load the real InceptionV1 weights, so they run where ``../shared/models`` holds them and skip
with the reason otherwise (markers ``real`` and ``slow``); a static check that every name a
block uses is defined by then runs everywhere. The pages under docs/ follow the same
conventions (tests/test_docs.py; the helpers of both are in tests/_blocks.py).
"""

from __future__ import annotations

import re

import pytest
from _blocks import python_blocks, shrink, undefined_names
from conftest import INCEPTION_V1, REPO, SHARED

README = REPO / "README.md"
TEXT = README.read_text()
BLOCKS = python_blocks(TEXT)
#: the most lines the README may have: it is read in five minutes, the rest is in docs/
MAX_LINES = 200
#: the test command .ci/run runs, which the README gives as a line of its own
TEST_COMMAND = "python -m pytest -q"

# the README's figures -> small ones; each (pattern, replacement) must still match, so a
# README edit that escapes them fails here instead of making this test slow
SMALL = [
    # the quick start's render(model, "LAYER:C") takes the library's 512 steps: give it 2
    (r"\.render\((\w+), (\"[^\"]*\")\)", r".render(\1, \2, steps=2)"),
]


def small(code: str) -> str:
    """``code`` with the substitutions of ``SMALL`` applied."""
    return shrink(code, SMALL)


def test_the_readme_is_read_in_five_minutes():
    lines = TEXT.count("\n") + (not TEXT.endswith("\n"))
    assert lines <= MAX_LINES, f"README.md has {lines} lines, at most {MAX_LINES}: move the " \
                               "rest into a page under docs/"


def test_the_readme_gives_its_two_set_up_commands_first_and_the_test_command():
    first = re.search(r"^```(\w*)\n(.*?)^```", TEXT, re.M | re.S)
    assert first and first.group(1) == "bash", "the README's first code block is the set-up"
    install, render = first.group(2).splitlines()
    assert install.startswith("pip install")
    assert "featviz render --model inceptionv1" in render and "--out" in render
    assert TEST_COMMAND in TEXT.splitlines(), f"the line {TEST_COMMAND!r} (.ci/run's command)"


def test_every_file_the_readme_links_exists():
    targets = re.findall(r"\]\(([^)\s]+)\)", TEXT)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert "examples/figures/inceptionv1_channels.png" in local
    missing = [t for t in local if t and not (REPO / t).exists()]
    assert not missing, f"README.md links files that do not exist: {missing}"


def test_the_readme_has_python_blocks_and_every_substitution_applies():
    text = "\n".join(code for _, code in BLOCKS)
    assert len(BLOCKS) >= 1
    unused = [pattern for pattern, _ in SMALL if not re.search(pattern, text)]
    assert not unused, f"SMALL patterns that match no README block: {unused}"


def test_every_name_a_block_uses_is_defined_by_then():
    assert not undefined_names(BLOCKS), f"README.md blocks use undefined names " \
                                        f"(line, names): {undefined_names(BLOCKS)}"


@pytest.fixture(scope="module")
def session() -> dict:
    """The one Python session the blocks run in, and how many blocks it has run."""
    return {"namespace": {"__name__": "__readme__"}, "done": 0}


@pytest.mark.real
@pytest.mark.skipif(not INCEPTION_V1.is_file(),
                    reason=f"real InceptionV1 weights not found at {INCEPTION_V1} (set "
                           "FEATVIZ_SHARED to the folder holding models/ and images/)")
@pytest.mark.slow  # seconds: InceptionV1 loaded, a few steps rendered
@pytest.mark.parametrize("index", range(len(BLOCKS)),
                         ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block_runs(index, session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATVIZ_MODELS", str(SHARED / "models"))
    # blocks before this one first (when run alone, or after one failed), then this one
    for i in range(session["done"], index + 1):
        line, code = BLOCKS[i]
        exec(compile(small(code), f"README.md block at line {line}", "exec"),
             session["namespace"])
        session["done"] = i + 1
