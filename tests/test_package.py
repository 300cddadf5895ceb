"""featviz as a user installs it: ``python -m build`` makes an sdist and a wheel (the wheel built
from the sdist, as build does), the wheel holds every file featviz has beside its modules, and
installed into a new virtual environment it answers ``featviz --version`` and renders, from the
command line and from Python, from a folder outside the repository.

The new environment (``--system-site-packages``) sees featviz's dependencies (torch,
torchvision, kornia, ...) where this one has them, one ``.pth`` line per folder, so nothing is
downloaded; but not this checkout: the editable install's hook is never loaded there, featviz
cannot be imported there before the wheel is installed, and each check asserts that the featviz
that ran is the wheel's, in the new environment's site-packages. Those tests are marked
``slow`` (under a minute: a build, a venv, five processes that import torch); the package's
metadata is checked without them: one version (``featviz.__version__``) everywhere, the
license, the citation and the changelog."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import HANG_GUARD_S, REPO

import featviz

# what a checkout holds that is no part of a build (caches, earlier builds, the docs site)
_NOT_SOURCE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "*.egg-info", "build",
                                     "dist", "site", ".venv", ".pytest_cache", ".ruff_cache",
                                     "out", "runs")


def test_one_version_everywhere(capsys):
    """``featviz.__version__`` is the one place: pyproject reads it, ``featviz --version``
    prints it, CITATION.cff and the changelog name it."""
    from featviz.cli import main

    version = featviz.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+|\.dev\d+)?", version)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \[.*"version".*\]', pyproject, re.M)
    assert re.search(r'^version = \{ ?attr = "featviz.__version__" ?\}', pyproject, re.M)
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"featviz {version}\n"
    citation = (REPO / "CITATION.cff").read_text()
    assert re.search(rf'^version: "?{re.escape(version)}"?$', citation, re.M)
    assert re.search(rf"^## \[?{re.escape(version)}\]?", (REPO / "CHANGELOG.md").read_text(),
                     re.M)


def test_license_citation_and_changelog():
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n") and len(text) > 11000
    for part in ("Version 2.0, January 2004", "1. Definitions.", "9. Accepting Warranty",
                 "END OF TERMS AND CONDITIONS"):
        assert part in text, part
    assert re.search(r'^license = "Apache-2.0"$', (REPO / "pyproject.toml").read_text(), re.M)
    citation = (REPO / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in citation and "featviz maintainers" in citation
    assert "license: Apache-2.0" in citation and "http" not in citation
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[?Unreleased\]?", changelog, re.M)
    assert changelog.index("Unreleased") < changelog.index(f"{featviz.__version__}")


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``argv``; its stdout, or a failure showing both streams."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, (f"{' '.join(map(str, argv))} exited {done.returncode}\n"
                                  f"{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel ``python -m build`` makes of a copy of this checkout (so that
    the build leaves nothing in it). Without build isolation: the setuptools installed here
    builds it, with no download."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the build package is not installed (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"),
          str(source)], cwd=root)
    wheels, sdists = list((root / "dist").glob("*.whl")), list((root / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list((root / "dist").iterdir())
    return {"root": root, "source": source, "wheel": wheels[0], "sdist": sdists[0]}


@pytest.mark.slow
def test_the_wheel_and_sdist_carry_the_version_the_license_and_every_data_file(built):
    version = featviz.__version__
    assert built["wheel"].name == f"featviz-{version}-py3-none-any.whl"
    assert built["sdist"].name == f"featviz-{version}.tar.gz"
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
    # every file under featviz/ that is not Python (class names, templates, checksums...)
    package = built["source"] / "featviz"
    data = {p.relative_to(package.parent).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert data <= names, (f"not in the wheel: {sorted(data - names)}; declare them under "
                           "[tool.setuptools.package-data] in pyproject.toml")
    modules = {p.relative_to(package.parent).as_posix() for p in package.rglob("*.py")}
    assert modules <= names, f"modules not in the wheel: {sorted(modules - names)}"
    assert f"featviz-{version}.dist-info/licenses/LICENSE" in names
    top = f"featviz-{version}/"
    with tarfile.open(built["sdist"]) as archive:
        sdist = set(archive.getnames())
    for kept in ("LICENSE", "CHANGELOG.md", "CITATION.cff", "pyproject.toml", "README.md"):
        assert top + kept in sdist, f"{kept} is not in the sdist"


def _site_folders(wheel: Path) -> list[str]:
    """The folders this environment imports the wheel's dependencies from (its
    ``Requires-Dist`` lines other than extras)."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(meta).decode("utf-8").splitlines()
    needs = [re.match(r"[A-Za-z0-9._-]+", line.split(":", 1)[1].strip()).group(0)
             for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert "torch" in needs, needs
    folders = []
    for name in needs:
        try:
            folder = str(Path(importlib.metadata.distribution(name).locate_file("")).resolve())
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"featviz needs {name}, which is not installed here")
        if folder not in folders:
            folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def installed(built) -> dict:
    """A new virtual environment with the wheel installed (``--no-deps``: its dependencies are
    this environment's, each of their folders named on a plain ``.pth`` line, which Python
    appends to ``sys.path`` without running the ``.pth`` files there: the editable install's
    hook stays out), and the environment to run its commands in, from a folder outside the
    repository."""
    root = built["root"]
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=root)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                          "['purelib'])"], cwd=root).strip())
    folders = _site_folders(built["wheel"])
    (site / "featviz_test_dependencies.pth").write_text("\n".join(folders) + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(VIRTUAL_ENV=str(venv), PYTHONNOUSERSITE="1",
               PATH=os.pathsep.join([str(python.parent), env.get("PATH", "")]))
    work = root / "elsewhere"
    work.mkdir()
    # before the wheel, no featviz at all there: what runs later can only be the wheel's
    _run([str(python), "-c", "import importlib.util, sys; import torch, torchvision, kornia; "
                             "sys.exit(importlib.util.find_spec('featviz') is not None)"],
         cwd=work, env=env)
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
          "--no-index", str(built["wheel"])], cwd=root)
    return {"python": python, "site": site.resolve(), "env": env, "work": work}


@pytest.mark.slow
def test_the_installed_featviz_is_the_wheels_not_this_checkout(installed):
    found = json.loads(_run([str(installed["python"]), "-c", (
        "import json, featviz, featviz.face.cli, featviz.models; print(json.dumps("
        "[featviz.__file__, featviz.face.cli.__file__, featviz.__version__]))")],
        cwd=installed["work"], env=installed["env"]))
    for file in found[:2]:
        assert Path(file).resolve().is_relative_to(installed["site"]), found
        assert not Path(file).resolve().is_relative_to(REPO), found
    assert found[2] == featviz.__version__
    script = shutil.which("featviz", path=installed["env"]["PATH"])
    assert script and Path(script).resolve().parent == installed["python"].parent.resolve()


@pytest.mark.slow
def test_featviz_version_and_models_from_the_installed_command(installed):
    run = dict(cwd=installed["work"], env=installed["env"])
    assert _run(["featviz", "--version"], **run).strip() == f"featviz {featviz.__version__}"
    assert _run([str(installed["python"]), "-m", "featviz", "--version"], **run).strip() == \
        f"featviz {featviz.__version__}"
    assert "inceptionv1" in _run(["featviz", "models"], **run)


@pytest.mark.slow
def test_the_installed_command_renders(installed):
    out = installed["work"] / "channel.png"
    printed = _run(["featviz", "render", "--model", "mobilenet_v2", "--weights", "random",
                    "--objective", "features.2:0", "--size", "32", "--steps", "2",
                    "--no-progress", "--device", "cpu", "--out", str(out)],
                   cwd=installed["work"], env=installed["env"])
    assert out.is_file() and out.stat().st_size > 0, printed
    from PIL import Image

    assert Image.open(out).size == (32, 32)


_PYTHON_RENDER = """
import json, featviz
from featviz import objectives as obj
model = featviz.models.load("mobilenet_v2", weights="random", device="cpu")
lion = featviz.models.class_index(model, "lion")
result = featviz.render(model, obj.logit(lion), size=32, steps=2, progress=False)
result.save("lion.png")
print(json.dumps([lion, result.labels, featviz.models.__file__]))
"""


@pytest.mark.slow
def test_the_installed_library_renders_a_class_by_its_name(installed):
    lion, labels, where = json.loads(_run([str(installed["python"]), "-c", _PYTHON_RENDER],
                                          cwd=installed["work"], env=installed["env"]))
    assert lion == 291  # ImageNet's "lion": the class names reached the installed package
    assert re.search(r"lion", " ".join(map(str, labels))), labels
    assert Path(where).resolve().is_relative_to(installed["site"])
    assert (installed["work"] / "lion.png").is_file()
