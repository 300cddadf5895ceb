"""Loading models by name, from local files, with aliases; clear errors for bad names/files."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from conftest import IMAGES, SHARED, hook_free

import featviz
from featviz import models
from featviz.errors import UnknownNameError, WeightsError
from featviz.hooks import resolve_layer


def test_wrapper_normalizes_and_keeps_paths():
    m = models.load("cifar_resnet20", weights=None, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.25))
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.2, 0.25]).view(1, 3, 1, 1)
    torch.testing.assert_close(m(x), m.net((x - mean) / std))
    assert resolve_layer(m, "layer2.0.conv1") is m.net.layer2[0].conv1
    assert not m.training and m.input_size == 32


def test_local_state_dict_roundtrip(tmp_path):
    src = models.load("cifar_resnet20", weights=None)
    path = tmp_path / "r20.pth"
    # as saved from DataParallel inside a checkpoint dict
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.net.state_dict().items()}}, path)
    m = models.load("cifar_resnet20", weights=path)
    for (k, a), b in zip(src.net.state_dict().items(), m.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_mismatching_file_names_path_and_keys(tmp_path):
    path = tmp_path / "r20.pth"
    torch.save(models.load("cifar_resnet20", weights=None).net.state_dict(), path)
    with pytest.raises(WeightsError) as err:
        models.load("cifar_resnet32", weights=path)
    msg = str(err.value)
    assert str(path) in msg and "missing in the file" in msg and "layer1.3.conv1.weight" in msg


def test_missing_file_names_path(tmp_path):
    with pytest.raises(WeightsError, match="not found: .*nope.pth"):
        models.load("mobilenet_v2", weights=tmp_path / "nope.pth")


def test_unreadable_file_names_path(tmp_path):
    bad = tmp_path / "junk.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        models.load("cifar_resnet20", weights=bad)


def test_unknown_model_lists_closest():
    with pytest.raises(UnknownNameError, match="'mobilenet_v2'"):
        models.load("mobilenetv2", weights=None)


def test_unknown_weights_name():
    with pytest.raises(UnknownNameError, match="IMAGENET1K_V1"):
        models.load("alexnet", weights="IMAGENET_V9")


def test_offline_download_points_to_weights_flag(monkeypatch):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="--weights PATH"):
        models.load("alexnet", weights="DEFAULT")


def test_googlenet_lucid_aliases():
    m = models.load("googlenet", weights=None)
    assert resolve_layer(m, "mixed4a") is m.net.inception4a
    assert resolve_layer(m, "mixed5b") is m.net.inception5b
    assert resolve_layer(m, "conv2d0") is m.net.conv1
    assert m.net.aux1 is None  # auxiliary heads are never built


@pytest.mark.heavy
def test_layer_table_shapes():
    rows = {name: (kind, shape) for name, kind, shape in
            models.layer_table(models.load("mobilenet_v2", weights=None))}
    assert rows["features.14"] == ("InvertedResidual", "160x7x7")
    assert rows["features.4"][1] == "32x28x28"
    assert rows["classifier.1"][1] == "1000"


def test_layer_table_leaves_no_hooks():
    m = models.load("cifar_resnet20", weights=None)
    m.train()
    models.layer_table(m)
    assert hook_free(m) and m.training


@pytest.mark.parametrize("name", ["googlenet", "vgg16", "resnet50", "mobilenet_v2", "alexnet"])
@pytest.mark.heavy
def test_required_architectures_build(name):
    m = models.load(name, weights=None)
    assert isinstance(m, models.Preprocessed) and m.name == name


CIFAR = SHARED / "models" / "resnet20_cifar10.pth"


@pytest.mark.real
@pytest.mark.skipif(not CIFAR.is_file(), reason=f"CIFAR weights not found at {CIFAR}")
def test_real_cifar_resnet_classifies_photos():
    m = models.load("cifar_resnet20", weights=CIFAR)
    for photo, label in [("cat.jpg", 3), ("bird.jpg", 2)]:
        img = featviz.images.load(IMAGES / photo, size=32, fit="resize")
        with torch.no_grad():
            assert int(m(img).argmax()) == label, photo
