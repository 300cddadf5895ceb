"""Theoretical receptive fields agree with hand-computed values."""

from __future__ import annotations

import pytest
import torch
from conftest import hook_free
from torch import nn

import featviz
from featviz import receptive_field as rf
from featviz.backward_rules import RELU_LIKE
from featviz.errors import FeatvizError
from featviz.methods._linear import Linearized


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
@pytest.mark.heavy
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


def _stack(n: int, channels: int = 4, relu: bool = False, stride2_at: int | None = None,
           dilation: int = 1) -> nn.Module:
    layers = []
    for i in range(n):
        stride = 2 if i == stride2_at else 1
        layers.append(nn.Conv2d(3 if i == 0 else channels, channels, 3, stride, dilation,
                                dilation=dilation))
        if relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@pytest.mark.parametrize("n", [1, 4, 9])
def test_trf_of_a_stack_is_2n_plus_1(n):
    net = _stack(n)
    field = rf.theoretical(net, str(n - 1), input_size=4 * n + 8)
    assert field.size == (2 * n + 1, 2 * n + 1) and field.jump == (1, 1)


def test_uniform_erf_is_the_multinomial_closed_form():
    """Luo et al.: with equal weights the ERF of n 3x3 convs is the n-fold convolution of a box,
    i.e. the trinomial coefficients of (1 + z + z²)^n per axis, σ = sqrt(n (k²-1) / 12)."""
    n, size = 5, 31
    erf = rf.effective(_stack(n), str(n - 1), input_size=size, samples=2, weights="uniform")
    coeff = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    line = torch.tensor([1.0], dtype=torch.float64)
    for _ in range(n):
        line = torch.nn.functional.conv1d(line.view(1, 1, -1), coeff.view(1, 1, -1),
                                          padding=2).flatten()
    expected = torch.zeros(size, size, dtype=torch.float64)
    c = size // 2
    expected[c - n:c + n + 1, c - n:c + n + 1] = torch.outer(line, line)
    expected /= expected.sum()
    torch.testing.assert_close(erf.map.double(), expected, atol=1e-6, rtol=0)
    assert abs(erf.sigma - (n * (9 - 1) / 12) ** 0.5) < 1e-3
    assert erf.area(1.0) == (2 * n + 1) ** 2 and erf.ratio_to() <= 1


@pytest.mark.heavy
def test_erf_measures_and_plot(tmp_path):
    net = _stack(6, relu=True)
    erf = rf.effective(net, "10", input_size=41, samples=4, weights="random")
    assert 0 < erf.area_fraction(0.5) < erf.area_fraction(0.95) <= 1
    assert erf.radius(0.5) < erf.radius(0.95)
    r, v = erf.profile()
    assert v[0] == v.max() or v[:3].max() == v.max()  # peaked in the middle
    assert erf.plot(tmp_path / "erf.png").stat().st_size > 0
    # seeded weights: the stack's own depend on every draw before this test (a dead centre unit)
    fields = rf.effective_layers(net, ["4", "10"], input_size=41, samples=2, weights="random")
    assert fields.fields[0].sigma < fields.fields[1].sigma
    assert "| 10 (random) |" in fields.table()


@pytest.mark.heavy
def test_erf_plot_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A save that fails half-way leaves the earlier plot as it was and no temporary file; a
    path that cannot be written is named."""
    import matplotlib.figure

    erf = rf.effective(_stack(3, relu=True), "4", input_size=21, samples=2, weights="random")
    target = erf.plot(tmp_path / "erf.png")
    before = target.read_bytes()

    def half_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as out:
            out.write(b"half a png")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_fail)
    with pytest.raises(FeatvizError, match="erf.png.*No space left"):
        erf.plot(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["erf.png"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FeatvizError, match="file"):
        erf.plot(tmp_path / "file" / "erf.png")
    assert erf.plot(tmp_path / "erf.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.heavy
def test_erf_bad_input():
    net = _stack(2)
    with pytest.raises(ValueError, match="samples"):
        rf.effective(net, "1", input_size=16, samples=0)
    flat = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    with pytest.raises(FeatvizError, match="no spatial maps"):
        rf.effective(flat, "1", input_size=16, samples=1)
    dead = _stack(1)
    with torch.no_grad():
        dead[0].weight.zero_()
    with pytest.raises(FeatvizError, match="does not depend on the input"):
        rf.effective(dead, "0", input_size=16, samples=1)
    with pytest.warns(UserWarning, match="larger than the 8-px input"):
        rf.effective(_stack(6), "5", input_size=8, samples=1, weights="uniform")


@pytest.mark.heavy
def test_erf_from_an_image_folder_one_channel_squared(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((30, 30, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
    # a network whose channel 1 is alive at the centre (dead for half of the seeds), not
    # whatever the tests before left in the global random state
    torch.manual_seed(2)
    net = _stack(3, relu=True)
    a = rf.effective(net, "5", input_size=24, samples=5, inputs=tmp_path, channel=1)
    b = rf.effective(net, "5", input_size=24, samples=5, inputs=tmp_path, channel=1, squared=True)
    assert a.samples == 3  # the folder holds only three images
    assert not torch.allclose(a.map, b.map) and abs(a.map.sum() - 1) < 1e-5
    with pytest.raises(FeatvizError, match="valid: 0-3"):
        rf.effective(net, "5", input_size=24, samples=1, channel=4)


@pytest.mark.parametrize("fn", list(RELU_LIKE), ids=lambda f: getattr(f, "__qualname__", str(f)))
def test_every_relu_spelling_is_an_identity_when_linearized(fn):
    """The linearized copy lets the gradient through every ReLU spelling the backward rules
    know (one list for both), also for negative inputs a ReLU would cut."""
    x = torch.full((1, 2, 3, 3), -2.0, requires_grad=True)
    with Linearized():
        y = fn(x * 1.0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(y, torch.full_like(y, -2.0)) and torch.equal(grad, torch.ones_like(x))


@pytest.mark.heavy
def test_random_weights_leave_the_callers_random_state_alone():
    net = _stack(3, relu=True)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = rf.effective(net, "4", input_size=21, samples=2, weights="random", seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = rf.effective(net, "4", input_size=21, samples=2, weights="random", seed=5)
    torch.testing.assert_close(a.map, b.map, rtol=0, atol=0)  # the seed alone decides


def test_random_copy_is_torchs_own_initialization_from_the_seed():
    net = _stack(3, relu=True)
    twin = rf._reinitialized(net, 5)
    torch.manual_seed(5)
    fresh = _stack(3, relu=True)  # building a layer draws its initial weights in this order
    for mine, theirs, old in zip(twin.parameters(), fresh.parameters(), net.parameters(),
                                 strict=True):
        assert torch.equal(mine, theirs) and not torch.equal(mine, old)
