"""Shared fixtures: tiny models for fast tests, and the real weights where they exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import featviz

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", REPO.parent / "shared"))
MOBILENET = SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"
IMAGES = SHARED / "images"


class Counter(nn.Module):
    """Identity that counts its calls, to see whether the forward reached it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


class TinyNet(nn.Module):
    """A small conv net that uses a ReLU module, a functional ReLU and an in-place ReLU6."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.act3 = nn.ReLU6(inplace=True)
        self.tail = Counter()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)
        with torch.no_grad():  # default init gives a tiny gain; make the image matter
            for conv in (self.conv1, self.conv2, self.conv3):
                conv.weight.mul_(3)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.act3(self.conv3(x))
        x = self.tail(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class ReusedReluNet(nn.Module):
    """Calls one ReLU module object twice, as torchvision ResNets do."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.conv2(self.relu(self.relu(self.conv1(x)) + 0.1))


def make_tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return featviz.models.wrap(TinyNet(), input_size=32, name="tiny")


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; two spin badly on a busy shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny():
    return make_tiny()


def hook_free(model: nn.Module) -> bool:
    return featviz.hooks.hook_count(model) == 0


# A guard against a hung subprocess, not a speed limit: no test may fail because a busy machine
# is slow (the whole suite took 30 minutes on a loaded 2-core one), so an hour.
HANG_GUARD_S = 3600


def needs_weights(test):
    """Mark ``test`` as needing the real MobileNetV2 weights: marker ``real`` (``-m "not
    real"`` leaves it out), and a skip with the reason where the weights are absent."""
    skip = pytest.mark.skipif(
        not MOBILENET.is_file(),
        reason=f"real MobileNetV2 weights not found at {MOBILENET} (set FEATVIZ_SHARED to the "
               "folder holding models/ and images/)")
    return pytest.mark.real(skip(test))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the real model as a fixture needs the weights as much as one marked
    ``real``: mark it so that ``-m "not real"`` leaves it out too."""
    for item in items:
        if "mobilenet" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def mobilenet():
    if not MOBILENET.is_file():
        pytest.skip(f"real MobileNetV2 weights not found at {MOBILENET}")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return featviz.models.load("mobilenet_v2", weights=MOBILENET, mean=(0.5,) * 3, std=(0.5,) * 3)
