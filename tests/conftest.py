"""Shared fixtures: tiny models for fast tests, and the real weights where they exist."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import featviz
from featviz import objectives as obj

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", REPO.parent / "shared"))
MOBILENET = SHARED / "models" / "mobilenet_v2_imagenet_coral.pth"
INCEPTION_V1 = SHARED / "models" / "googlenet_bvlc_imagenet.pth"
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


class DigitNet(nn.Module):
    """A small grayscale CNN for scikit-learn's digits (8x8, upsampled to 16 px): three 3x3
    convolutions (the last two of stride 2) and a flatten + Linear head, so it takes 16 px."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.fc(x.flatten(1))


DIGIT_SIZE = 16


def wrap_digits(net: nn.Module) -> nn.Module:
    return featviz.models.wrap(net, mean=(0.5,), std=(0.5,), input_size=DIGIT_SIZE,
                               name="digits", fixed_size=True)


@pytest.fixture(scope="session", autouse=True)
def python_ctrl_c():
    """The Ctrl-C tests send this process a real SIGINT and expect Python's own handler.
    A suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
    ignored, and Python then leaves it ignored, so the suite installs Python's handler for
    its run and puts back what it found."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits (no download) as [N,1,16,16] images in [0, 1] and their
    labels, split 1500 for training and the rest for testing."""
    datasets = pytest.importorskip("sklearn.datasets",
                                   reason="scikit-learn is not installed (pip install -e "
                                          "'.[dev]'): the grayscale digits model needs it")
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16  # pixel values are 0-16
    x = F.interpolate(x, size=DIGIT_SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    y = torch.tensor(d.target)
    return {"train": (x[order[:1500]], y[order[:1500]]), "test": (x[order[1500:]], y[order[1500:]])}


@pytest.fixture(scope="session")
def digits_model(digits):
    """:class:`DigitNet` trained on the digits (4 epochs of Adam, about 10 s on one busy
    core; about 97 % of the held-out digits right), wrapped for featviz."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = wrap_digits(DigitNet())
    x, y = digits["train"]
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(4):
        for batch in torch.randperm(len(x), generator=gen).split(50):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(before)
    return model.eval()


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


def check_setting_batch_invariant(model: nn.Module, **setting) -> None:
    """A render setting (``rail_guard=2``) changes the image, leaves each image of a batch as
    it is alone, and at 0 is the same as not given (on the careful course, which sets none)."""
    (name, value), = setting.items()
    kw = dict(size=32, steps=24, lr=0.2, progress=False, pace="careful")
    one = featviz.render(model, obj.channel("conv2", 1), seed=5, **setting, **kw)
    both = featviz.render(model, obj.channel("conv2", 1), seed=[5, 6], **setting, **kw)
    torch.testing.assert_close(both.images[:1], one.images, atol=1e-5, rtol=0)
    plain = featviz.render(model, obj.channel("conv2", 1), seed=5, **kw)
    zero = featviz.render(model, obj.channel("conv2", 1), seed=5, **{name: 0}, **kw)
    assert torch.equal(plain.images, zero.images)
    assert not torch.allclose(plain.images, one.images, atol=1e-3)


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


#: markers that keep a test out of the quick subset
NOT_QUICK = ("slow", "real", "heavy")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the real model as a fixture needs the weights as much as one marked
    ``real``: mark it so that ``-m "not real"`` leaves it out too. Every test with none of
    :data:`NOT_QUICK` is marked ``quick``: ``python -m pytest -q -m quick`` runs those (about
    two minutes on a 2-core CPU; the full run, all of them, several times that)."""
    for item in items:
        if {"mobilenet", "inceptionv1"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)
        if not any(item.get_closest_marker(name) for name in NOT_QUICK):
            item.add_marker(pytest.mark.quick)


@pytest.fixture(scope="session")
def mobilenet():
    if not MOBILENET.is_file():
        pytest.skip(f"real MobileNetV2 weights not found at {MOBILENET}")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return featviz.models.load("mobilenet_v2", weights=MOBILENET, mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.fixture(scope="session")
def inceptionv1():
    """InceptionV1 with the real BVLC GoogLeNet weights, as ``load("inceptionv1")`` builds it."""
    if not INCEPTION_V1.is_file():
        pytest.skip(f"real BVLC GoogLeNet weights not found at {INCEPTION_V1} (set "
                    "FEATVIZ_SHARED to the folder holding models/ and images/)")
    return featviz.models.load("inceptionv1", weights=INCEPTION_V1)
