"""Theoretical receptive fields agree with hand-computed values."""

from __future__ import annotations

import pytest
import torch
from conftest import hook_free
from torch import nn

import featviz
from featviz import receptive_field as rf


def test_stacked_convs():
    net = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(3)])
    field = rf.theoretical(net, "2", input_size=32)
    assert field.size == (7, 7) and field.jump == (1, 1)
    # unit (y, x) is centred on input pixel (y, x): padding keeps the grid aligned
    assert field.offset == (0.0, 0.0)
    assert field.box(10, 5) == (7, 2, 14, 9)


def test_pooling_and_stride():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    # conv3: 3; pool2: 3+1=4, jump 2; conv3: 4+2*2=8; conv3/2: 8+2*2=12, jump 4
    assert rf.theoretical(net, "2", input_size=32).size == (4, 4)
    f3 = rf.theoretical(net, "3", input_size=32)
    assert f3.size == (8, 8) and f3.jump == (2, 2)
    f4 = rf.theoretical(net, "4", input_size=64)
    assert f4.size == (12, 12) and f4.jump == (4, 4)


@pytest.fixture(scope="module")
def vgg16():
    return featviz.models.load("vgg16", weights=None)


@pytest.mark.parametrize("layer, size, jump", [
    ("features.3", 5, 1),     # conv1_2 + ReLU
    ("features.4", 6, 2),     # pool1
    ("features.15", 40, 4),   # conv3_3
    ("features.29", 196, 16),  # conv5_3
    ("features.30", 212, 32),  # pool5: wider than 224 px from the centre unit: grows the input
])
def test_vgg16_known_values(vgg16, layer, size, jump):
    model = vgg16
    field = rf.theoretical(model, layer)
    assert field.size == (size, size) and field.jump == (jump, jump) and not field.clipped
    assert hook_free(model)


def test_model_untouched():
    model = featviz.models.load("cifar_resnet20", weights=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rf.theoretical(model, "layer2.0")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
