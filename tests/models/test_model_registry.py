"""Models as data: a family registered by a user loads by name with its own preprocessing,
layer names, classes and weights; names clash loudly; unknown names name the closest; the
catalog lists what load takes; the models package has no import cycle."""

from __future__ import annotations

import ast
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TinyNet

import featviz
from featviz import models
from featviz.errors import UnknownNameError, WeightsError
from featviz.hooks import resolve_layer
from featviz.models import Built, Family, ModelSpec, WeightsSource

CLASSES = [f"kind{i}" for i in range(10)]


def tiny_spec(name: str = "tiny_user", **fields) -> ModelSpec:
    """A small user family: TinyNet at 32 px, its own statistics, layer alias and classes."""
    settings = dict(build=lambda request: TinyNet(), family="tests", aliases=("tiny_alias",),
                    description="a tiny test net", input_size=32, mean=(0.5, 0.4, 0.3),
                    std=(0.25, 0.2, 0.5), layer_aliases={"first": "conv1"}, classes=CLASSES,
                    weights=WeightsSource("a file", kind="files"))
    return ModelSpec(name, **{**settings, **fields})


@pytest.fixture
def registered():
    """Register specs for one test and take them out after, whatever the test did."""
    names = []

    def add(entry):
        models.register(entry)
        names.append(entry.name)
        return entry

    yield add
    for name in names:
        with contextlib.suppress(UnknownNameError):  # the test may have taken it out itself
            models.unregister(name)


def test_a_registered_family_loads_by_name_with_its_preprocessing(registered):
    registered(tiny_spec())
    torch.manual_seed(0)
    model = models.load("tiny_user", weights=None)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.2, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), model.net((x - mean) / std))
    assert not model.training and model.input_size == 32 and model.name == "tiny_user"
    assert resolve_layer(model, "first") is model.net.conv1
    assert models.class_index(model, "KIND7") == 7
    # by its alias too, named as the caller typed it; the caller's statistics win
    other = models.load("tiny_alias", weights=None, mean=(0.0,), std=(1.0,))
    assert other.name == "tiny_alias" and other.mean.flatten().tolist() == [0.0] * 3
    assert {"tiny_user", "tiny_alias"} <= set(models.available())
    rows = {r.name: r for r in models.catalog()}
    assert rows["tiny_user"] == ("tiny_user", "tests", 32, "a file", "a tiny test net")
    assert rows["tiny_alias"].description == "another name for tiny_user"


def test_weights_come_from_a_file_and_named_weights_are_refused(registered, tmp_path):
    registered(tiny_spec())
    source = models.load("tiny_user", weights=None)
    torch.save(source.net.state_dict(), tmp_path / "tiny.pth")
    again = models.load("tiny_user", weights=tmp_path / "tiny.pth")
    assert torch.equal(again.net.conv1.weight, source.net.conv1.weight)
    with pytest.raises(WeightsError, match="tiny_user has no downloadable weights.*PATH"):
        models.load("tiny_user")


def test_default_weights_from_a_folder_an_environment_variable_names(registered, tmp_path,
                                                                    monkeypatch):
    registered(tiny_spec(weights=WeightsSource("$TINY_DIR/tiny.pth", kind="env",
                                               env="TINY_DIR", file="tiny.pth",
                                               what="the tiny net's weights")))
    monkeypatch.delenv("TINY_DIR", raising=False)
    with pytest.raises(WeightsError, match="needs the tiny net's weights .TINY_DIR is unset"):
        models.load("tiny_user")
    monkeypatch.setenv("TINY_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="tiny.pth does not exist"):
        models.load("tiny_user")
    torch.manual_seed(1)
    net = TinyNet()
    torch.save(net.state_dict(), tmp_path / "tiny.pth")
    assert torch.equal(models.load("tiny_user").net.fc.weight, net.fc.weight)
    with pytest.raises(WeightsError, match="takes weights='default', a file path or None"):
        models.load("tiny_user", weights="V2")


def test_a_builder_may_say_what_its_weights_take_and_take_options(registered):
    seen = {}

    def build(request):
        seen.update(request.options, weights=request.weights, member=request.member)
        return Built(TinyNet(), mean=(0.1,), std=(0.2,), input_size=48)

    registered(tiny_spec("tiny_options", aliases=(), build=build, takes_options=True,
                         weights=WeightsSource("built in")))
    model = models.load("tiny_options", weights="v3", width=2)
    assert seen == {"width": 2, "weights": "v3", "member": "tiny_options"}
    assert model.input_size == 48 and model.std.flatten().tolist() == pytest.approx([0.2] * 3)
    # the message names every model that takes options, this one too
    with pytest.raises(TypeError, match="timm:, hf: and tiny_options models only"):
        models.load("cifar_resnet20", weights=None, width=2)


def test_a_taken_name_is_a_clear_error_and_changes_nothing(registered):
    first = registered(tiny_spec())
    with pytest.raises(models.DuplicateModelError, match="'tiny_user'.*taken by model "
                                                         "'tiny_user' of family 'tests'"):
        models.register(tiny_spec(aliases=()))
    with pytest.raises(models.DuplicateModelError, match="'cifar_resnet20'.*taken"):
        models.register(tiny_spec("mine", aliases=("cifar_resnet20",)))
    with pytest.raises(models.DuplicateModelError, match="timm:"):
        models.register(Family("my_timm", spec=lambda rest: first, prefix="timm"))
    with pytest.raises(models.DuplicateModelError, match="family named 'torchvision'"):
        models.register(Family("torchvision", spec=lambda rest: first, members=list))
    assert "mine" not in models.available()  # the failed registration left nothing behind
    assert models.lookup("tiny_alias") is first


def test_an_unknown_name_names_the_closest():
    with pytest.raises(UnknownNameError, match="unknown model 'cifar_resnet_20'; closest: "
                                               "'cifar_resnet20'"):
        models.load("cifar_resnet_20", weights=None)
    with pytest.raises(UnknownNameError, match="closest: 'inceptionv1'.*timm:NAME"):
        models.lookup("inceptionv")
    with pytest.raises(UnknownNameError, match="closest: 'cifar_resnet20'"):
        models.unregister("cifarresnet20")


def test_an_open_family_takes_any_name_after_its_prefix(registered):
    asked = []

    def spec(rest):
        asked.append(rest)
        return tiny_spec(f"mine:{rest}", aliases=())

    registered(Family("mine", spec=spec, prefix="mine", usage="mine:SIZE",
                      description="test nets", weights="none"))
    model = models.load("mine:small", weights=None)
    assert asked == ["small"] and model.name == "mine:small" and models.source_of("mine:x")
    assert ("mine:SIZE", "mine", None, "none", "test nets") in models.catalog()
    assert "mine:small" not in models.available()  # open: no list of its own


def test_the_catalog_lists_every_name_load_takes():
    rows = models.catalog()
    names = [r.name for r in rows]
    assert set(models.available()) <= set(names) and len(names) == len(set(names))
    assert names[-2:] == ["timm:NAME", "hf:ID_OR_FOLDER"]
    by_name = {r.name: r for r in rows}
    assert by_name["inception_v3"].input_size == 299 and by_name["cifar_resnet56"].input_size == 32
    assert by_name["inceptionv1"].weights.startswith("BVLC's caffemodel")
    assert by_name["resnet50"].family == "torchvision" and "IMAGENET1K_V2" in by_name[
        "resnet50"].weights
    assert all(r.description for r in rows)
    table = models.format_catalog().splitlines()
    assert len(table) == len(rows) + 1 and table[0].split() == ["name", "family", "size",
                                                               "weights", "description"]
    assert any(line.startswith("cifar_resnet20 ") and " 32 " in line for line in table)


def test_the_former_names_stay_importable():
    from featviz.models import (  # noqa: F401
        FAMILY_LAYOUTS,
        FIXED_SIZE_FAMILIES,
        IMAGENET_MEAN,
        IMAGENET_STD,
        INCEPTION_V1_FILE,
        LUCID_INCEPTION_V1,
        Preprocessed,
        SpatialLayer,
        available,
        class_index,
        from_source,
        layer_table,
        load,
        load_state_dict_file,
        middle_layer,
        random_weights,
        read_state_dict,
        source_of,
        spatial_layers,
        wrap,
        wrap_hf,
    )

    assert LUCID_INCEPTION_V1["mixed4a"] == "inception4a" and source_of("hf:x") == "hf"
    assert featviz.cifar is sys.modules["featviz.models.cifar"]


def _model_imports(path: Path, package: str) -> set[str]:
    """The featviz.models modules ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(f"{package}.{node.module}")
            else:  # `from . import x`: a module of the package, or the package itself
                found.update(f"{package}.{a.name}" if (path.parent / f"{a.name}.py").exists()
                             else package for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package):
            found.add(node.module)
    return found


def test_the_models_package_has_no_import_cycle():
    folder = Path(models.__file__).parent
    package = "featviz.models"
    graph = {}
    for path in folder.glob("*.py"):
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        graph[name] = _model_imports(path, package) - {name}
    cycles = []

    def visit(node, trail):
        for target in sorted(graph.get(node, ())):
            if target in trail:
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            else:
                visit(target, [*trail, target])

    for start in graph:
        visit(start, [start])
    assert cycles == []
    # only the package imports the package: the sources import its modules
    assert [m for m, targets in graph.items() if package in targets] == []


@pytest.mark.slow
def test_importing_the_models_and_loading_a_cifar_net_leaves_torchvision_out():
    code = ("import sys, featviz.models as m; m.load('cifar_resnet20', weights=None); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
