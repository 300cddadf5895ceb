"""The documentation site (mkdocs.yml, docs/): it builds with ``mkdocs build --strict`` (no
broken link, no missing reference, no docstring griffe warns about), every ```python block of
every page runs, and the built index and an API page render in headless Chromium with no
console error. Plus checks that need no extra: every page is in the nav, every figure is in
the gallery, every benchmark table keeps its command, machine and date.

The site is built once per test session, where the ``docs`` extra is installed (``pip install
-e ".[docs]"``); elsewhere those tests skip with the reason.

A page's blocks run in order in one Python session of their own, in a temporary working
folder, as a reader pasting that page's blocks into one prompt would: a page defines what it
uses. A block fenced ```py is shown the same and not run (for what a test cannot have: a GPU,
a download). The blocks run with small settings (see ``SMALL``: ``steps=N`` becomes 2, and
``featviz.render`` without ``steps`` takes 2), on the real weights of ``../shared`` (skipped
with the reason where they are absent); ``$FEATVIZ_MODELS`` points at ``../shared/models``, so
``featviz.models.load("inceptionv1")`` finds its weights there without a download.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _blocks import python_blocks, shrink, undefined_names
from _browser import IMAGES_SHOWN, Browser, needs_chromium, serve
from conftest import HANG_GUARD_S, REPO, SHARED, needs_weights

import featviz

DOCS = REPO / "docs"
CONFIG = REPO / "mkdocs.yml"
FIGURES = REPO / "examples" / "figures"
# the docs extra: mkdocs, its Material theme, mkdocstrings with its Python handler, mkdocs-jupyter
DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python",
                "mkdocs_jupyter")


def _missing_modules() -> list[str]:
    missing = []
    for name in DOCS_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:  # a parent package is absent
            missing.append(name)
    return missing


needs_docs_extra = pytest.mark.skipif(
    bool(_missing_modules()),
    reason=f"the docs extra is not installed ({', '.join(_missing_modules())} missing): "
           "pip install -e '.[docs]' to build the site")
# ---- the site, built once -------------------------------------------------------------------


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``mkdocs build --strict`` of the checkout into a temporary folder: (folder, the run)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(CONFIG), "--site-dir", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    return out, done


@needs_docs_extra
@pytest.mark.slow  # a process: about 10 s
def test_the_site_builds_in_strict_mode(site):
    out, done = site
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert not re.search(r"^(WARNING|ERROR)", log, re.M), log
    assert (out / "index.html").is_file()
    assert (out / "reference" / "render" / "index.html").is_file()
    assert (out / "figures" / "inceptionv1_channels.png").is_file()  # docs/hooks.py's figures
    assert (out / "quickstart" / "index.html").is_file()  # and the notebook, rendered


# ---- checks without the extra ---------------------------------------------------------------


def _nav_entries(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [entry for item in nav for entry in _nav_entries(item)]
    if isinstance(nav, dict):
        return [entry for value in nav.values() for entry in _nav_entries(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (the docs extra brings it)")
    nav = _nav_entries(yaml.safe_load(CONFIG.read_text())["nav"])
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert sorted(pages - set(nav)) == [], "pages the nav does not list"
    added = {"quickstart.ipynb"}  # docs/hooks.py adds it from examples/
    assert sorted(set(nav) - pages - added) == [], "nav entries with no page"


def test_every_figure_is_in_the_gallery():
    gallery = (DOCS / "gallery.md").read_text()
    shown = set(re.findall(r"\]\(figures/([\w.-]+\.png)\)", gallery))
    assert sorted(p.name for p in FIGURES.glob("*.png")) == sorted(shown)


def test_every_benchmark_table_keeps_its_command_machine_and_date():
    """Each table of the benchmarks page is followed, before the next table or heading, by the
    line that says how it was measured."""
    lines = (DOCS / "benchmarks.md").read_text().splitlines()
    tables = [i for i, line in enumerate(lines) if line.lstrip().startswith("|")
              and not lines[i - 1].lstrip().startswith("|")]
    assert len(tables) >= 20
    for start in tables:
        after = []
        for line in lines[start + 1:]:
            if line.startswith("#") or (line.lstrip().startswith("|") and after
                                        and not after[-1].lstrip().startswith("|")):
                break
            after.append(line)
        note = next((line for line in after if "**Command:**" in line), "")
        assert "**Machine:**" in note and "**Date:**" in note, \
            f"benchmarks.md line {start + 1}: a table without its command, machine and date"


# ---- the pages' Python blocks ---------------------------------------------------------------

PAGES = sorted(DOCS.rglob("*.md"))
BLOCKS = {page: python_blocks(page.read_text()) for page in PAGES}
RUNS = [(page, i) for page in PAGES for i in range(len(BLOCKS[page]))]

# small settings: the pages' figures, made quick (as tests/test_readme.py does for the README)
SMALL = [
    (r"\bsteps=\d+", "steps=2"),
    (r"\bsize=224\b", "size=64"),
    (r"\bsamples=\d+", "samples=2"),
    (r"\bchannels=range\(8\), k=9\b", "channels=range(2), k=2, size=64"),
    (r"\b(invert_layers|caricature)\(model, img, ", r"\1(model, img, steps=2, "),
    (r"\b(invert|invert_layers|caricature)\(model, img, ", r"\1(model, img, size=64, "),
    (r'capture\(model, img, layers="all"\)',
     'capture(model, img, layers=["features.4", "features.7"])'),
    (r"\beffective_layers\(model, ", "effective_layers(model, samples=2, input_size=64, "),
    (r'"features.7", "features.14"\]\)\.plot', '"features.7"]).plot'),
    (r"\.\./shared/imagenet-sample\", layer=", '../shared/images", layer='),
    # the ViT page's scans: its ten photos instead of the thousand
    (r'(top_k|collect)\(vit, "\.\./shared/imagenet-sample"', r'\1(vit, "../shared/images"'),
    (r'images="\.\./shared/imagenet-sample", k=6', 'images="../shared/images", k=2'),
    # the dictionary page: eight photos, sixteen units of each kind
    (r'LabelledFolder\("\.\./shared/imagenet-sample"\)',
     'LabelledFolder("../shared/imagenet-sample").spread(8)'),
    (r"feature_examples\(store, run\.sae, k=9\)",
     "feature_examples(store, run.sae, features=range(16), channels=range(16), k=3)"),
    (r"\.\./shared/", lambda _: f"{SHARED}/"),
]


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def test_every_name_a_page_block_uses_is_defined_on_its_page_by_then():
    for page in PAGES:
        missing = undefined_names(BLOCKS[page])
        assert not missing, f"docs/{_page_id(page)}: blocks at lines {missing} use names the " \
                            "page has not defined by then (each page runs in its own session)"


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> dict:
    """Per page: its Python session, its working folder and how many of its blocks have run."""
    return {page: {"namespace": {"__name__": "__docs__"}, "done": 0,
                   "cwd": tmp_path_factory.mktemp(_page_id(page).replace("/", "_"))}
            for page in PAGES}


def _quick_render(render):
    """``featviz.render`` taking 2 steps unless a block gives its own (then made 2 by SMALL)."""
    @functools.wraps(render)
    def quick(*args, **kwargs):
        kwargs.setdefault("steps", 2)
        return render(*args, **kwargs)
    return quick


@needs_weights
@pytest.mark.slow  # the pages' renders, projections and receptive fields: CPU-minutes
@pytest.mark.parametrize(("page", "index"), RUNS,
                         ids=[f"{_page_id(p)}:line{BLOCKS[p][i][0]}" for p, i in RUNS])
def test_docs_block_runs(page, index, sessions, monkeypatch):
    state = sessions[page]
    monkeypatch.chdir(state["cwd"])
    monkeypatch.setenv("FEATVIZ_MODELS", str(SHARED / "models"))
    monkeypatch.setattr(featviz, "render", _quick_render(featviz.render))
    # the page's blocks before this one first (when run alone, or after one failed)
    for i in range(state["done"], index + 1):
        line, code = BLOCKS[page][i]
        exec(compile(shrink(code, SMALL), f"docs/{_page_id(page)} block at line {line}", "exec"),
             state["namespace"])
        state["done"] = i + 1


# ---- the built site in a browser ------------------------------------------------------------


@pytest.fixture
def served(site):
    """The built site on an HTTP server on 127.0.0.1 (a file:// page cannot fetch its search
    index): its base URL."""
    out, done = site
    if done.returncode != 0:
        pytest.fail(f"the site did not build:\n{done.stdout}{done.stderr}")
    with serve(out) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


@needs_docs_extra
@needs_chromium
@pytest.mark.slow  # a browser
def test_the_index_and_an_api_page_render_in_headless_chromium(served, browser, site):
    errors = browser.open(served + "/")
    assert errors == [], f"the index logged errors: {errors}"
    assert browser.value("document.title").startswith("featviz")
    assert browser.value("document.querySelector('article.md-content__inner') !== null")
    assert browser.value(IMAGES_SHOWN), "an image of the index did not load"
    browser.screenshot(site[0] / "index.png")

    errors = browser.open(served + "/reference/render/")
    assert errors == [], f"the render reference logged errors: {errors}"
    # mkdocstrings' entry for featviz.render: its heading, signature and parameter table
    assert browser.value("document.getElementById('featviz.core.render.render') !== null")
    assert browser.value("document.querySelectorAll('.doc-signature').length") >= 1
    params = browser.value("[...document.querySelectorAll('td code')].map(c => c.textContent)")
    assert {"model", "objective", "steps", "seed"} <= set(params)
    assert browser.value(IMAGES_SHOWN)
    browser.screenshot(site[0] / "reference-render.png")
