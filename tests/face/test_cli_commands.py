"""The command line's shape: one module per subcommand, each small, registered from one list;
the default device chosen in one place; one safe-name helper; the sweep and the notebook
views import each other in no loop."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import featviz
from featviz.core.files import folder_name, safe_name
from featviz.face import cli, devices
from featviz.face.sweep import ranks

FACE = Path(featviz.__file__).resolve().parent / "face"


def test_every_subcommand_is_one_module_of_the_list():
    import argparse

    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    names = [m.__name__.rsplit(".", 1)[1] for m in cli.COMMANDS]
    assert list(sub.choices) == names  # the help lists them in the list's order
    for module in cli.COMMANDS:
        assert callable(module.add) and callable(module.run)
        assert sub.choices[module.__name__.rsplit(".", 1)[1]].get_default("run") is module.run


@pytest.mark.parametrize("path", sorted((FACE / "commands").glob("*.py")), ids=lambda p: p.name)
def test_command_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 260
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno + 1 <= 60, node.name


def test_the_entry_point_hands_its_loader_to_the_command(monkeypatch, capsys):
    seen = []

    def load(args):
        seen.append(args.model)
        raise featviz.FeatvizError("no model today")

    monkeypatch.setattr(cli, "_load_model", load)
    assert cli.main(["layers", "--model", "resnet18", "--weights", "random"]) == 2
    assert seen == ["resnet18"]
    assert "featviz layers: error: no model today" in capsys.readouterr().err


def test_one_default_device_for_commands_and_sweeps(monkeypatch):
    import torch

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for present, expected in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda present=present: present)
        assert devices.default_device() == expected
        with ranks.distributed() as (rank, world, device):
            assert (rank, world, device) == (0, 1, expected)
    with ranks.distributed("cpu") as (_, _, device):
        assert device == "cpu"


def test_the_default_device_is_written_once():
    # "cuda" if torch.cuda.is_available() ...: only devices.py may say it
    found = [str(p.relative_to(FACE)) for p in FACE.rglob("*.py")
             if "torch.cuda.is_available() else" in p.read_text()]
    assert found == ["devices.py"]


@pytest.mark.parametrize("text, safe, folder", [
    ("channel:mixed4a:97", "channel_mixed4a_97", "channel_mixed4a_97"),
    ("features.10.conv.0", "features.10.conv.0", "features.10.conv.0"),
    ("neuron:a/b:3:1:2", "neuron_a_b_3_1_2", "neuron_a_b_3_1_2"),
    ("//", "", "layer"),
])
def test_one_safe_name_for_files_and_folders(text, safe, folder):
    assert safe_name(text) == safe
    assert folder_name(text) == folder


def _face_imports(module: str) -> set[str]:
    """The featviz.face modules ``module`` imports anywhere in its file (inside functions too),
    relative imports resolved against its package."""
    mod = importlib.import_module(module)
    path = Path(mod.__file__)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            found.update(n for n in names if n.startswith("featviz.face"))
    return found


def test_the_sweep_package_does_not_import_the_notebook_views_or_the_gallery():
    sweep_modules = [f"featviz.face.sweep.{p.stem}" for p in (FACE / "sweep").glob("*.py")
                     if p.stem != "__init__"]
    for module in sweep_modules:
        outside = {m for m in _face_imports(module) if not m.startswith("featviz.face.sweep")
                   and m != "featviz.face.devices"}
        assert outside == set(), module
