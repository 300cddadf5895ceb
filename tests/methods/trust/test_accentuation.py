"""Feature accentuation on the tiny model: the objective rises, the regularized layer stays
near the photo's, one seed gives one image, step 0 is the photo, the model comes back as it
was (also when the objective fails midway), bad input is named."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import featviz
from featviz.core.param.photo_spectrum import SeededSpectrumRaw, seeded_spectrum
from featviz.methods.trust.accentuation import (
    Accentuation,
    accentuate,
    as_objective,
    default_layer,
)
from featviz.objectives import Objective, channel

FAST = dict(steps=12, crops=4, lr=0.1)  # enough to move the tiny model, well under a second


@pytest.fixture
def photo():
    """A smooth 32-px picture with some structure, in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    return torch.stack([x, y, 0.5 + 0.4 * torch.sin(6 * x) * torch.cos(5 * y)]).clamp(0, 1)


def _state(model):
    return ([(m, m.training) for m in model.modules()],
            [(p, p.requires_grad, p.detach().clone()) for p in model.parameters()])


def _unchanged(model, state) -> bool:
    modes, params = state
    return (featviz.hooks.hook_count(model) == 0
            and all(m.training == t for m, t in modes)
            and all(p.requires_grad == g and torch.equal(p, v) for p, g, v in params))


def test_step_zero_reproduces_the_seed(photo):
    p = seeded_spectrum(photo)
    assert isinstance(p.raw, SeededSpectrumRaw)
    assert (p()[0] - photo).abs().max() < 1e-3
    assert {n for n, _ in p.named_parameters()} == {"raw.phase", "raw.gain"}
    assert torch.allclose(torch.sigmoid(p.raw.gain), torch.tensor(0.9933), atol=1e-4)


def test_the_objective_rises_and_the_model_comes_back(tiny, photo, one_thread):
    tiny.train()  # a flag to restore: frozen() evaluates and must put it back
    state = _state(tiny)
    r = accentuate(tiny, photo, "channel:conv3:1", **FAST)
    assert isinstance(r, Accentuation) and r.after > r.before
    assert r.image.shape == photo.shape and r.image.device.type == "cpu"
    assert float(r.image.min()) >= 0 and float(r.image.max()) <= 1
    assert r.difference.shape == r.saliency.shape == photo.shape[1:]
    assert float(r.saliency.sum()) > 0 and float(r.difference.sum()) > 0
    assert torch.equal(r.seed, photo)
    assert r.layer == default_layer(tiny, channel("conv3", 1)) == "relu"
    assert [h[0] for h in r.history][:2] == [0, 1] and r.history[-1][0] == FAST["steps"] - 1
    assert _unchanged(tiny, state)


def test_the_weight_holds_the_layer_near_the_photo(tiny, photo, one_thread):
    free = accentuate(tiny, photo, "channel:conv3:1", weight=0, **FAST)
    held = accentuate(tiny, photo, "channel:conv3:1", weight=10, **FAST)
    assert held.distance < free.distance and held.distance < 0.3
    pixels = accentuate(tiny, photo, "channel:conv3:1", layer="input", weight=10, **FAST)
    assert pixels.layer == "input" and pixels.after > pixels.before


def test_one_seed_gives_one_image(tiny, photo, one_thread):
    a = accentuate(tiny, photo, "channel:conv3:1", seed=3, **FAST)
    b = accentuate(tiny, photo, "channel:conv3:1", seed=3, **FAST)
    c = accentuate(tiny, photo, "channel:conv3:1", seed=4, **FAST)
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)


def test_no_steps_give_the_photo_back(tiny, photo):
    r = accentuate(tiny, photo, channel("conv3", 1), steps=0)
    assert (r.image - photo).abs().max() < 1e-3 and r.distance < 1e-2
    assert r.after == pytest.approx(r.before, rel=1e-2) and r.history == []


def test_the_model_comes_back_when_the_objective_fails_midway(tiny, photo):
    calls = []

    def fn(acts):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("objective broke")
        return acts["conv3"][:, 1].mean((1, 2))

    tiny.train()
    state = _state(tiny)
    with pytest.raises(RuntimeError, match="objective broke"):
        accentuate(tiny, photo, Objective(fn, ["conv3"], "fragile"), **FAST)
    assert _unchanged(tiny, state)


def test_bad_input_is_named(tiny, photo):
    with pytest.raises(featviz.FeatvizError, match="conv3"):  # the closest real layer
        accentuate(tiny, photo, "channel:conv3:1", layer="conv33", steps=1)
    with pytest.raises(featviz.FeatvizError, match="conv2"):
        accentuate(tiny, photo, "channel:conv22:1", steps=1)
    with pytest.raises(featviz.FeatvizError, match="objective"):
        accentuate(tiny, photo, 42, steps=1)
    with pytest.raises(featviz.FeatvizError, match=r"\[3,H,W\]"):
        accentuate(tiny, photo[:2], "channel:conv3:1", steps=1)
    with pytest.raises(featviz.FeatvizError, match=r"\[0, 1\]"):
        accentuate(tiny, photo * 255, "channel:conv3:1", steps=1)
    with pytest.raises(featviz.FeatvizError, match="not found"):
        accentuate(tiny, "/no/such/photo.jpg", "channel:conv3:1", steps=1)
    with pytest.raises(featviz.FeatvizError, match="crop_sizes"):
        accentuate(tiny, photo, "channel:conv3:1", crop_sizes=(0.5, 0.2))
    with pytest.raises(featviz.FeatvizError, match="batch"):
        as_objective(channel("conv3", 1, batch=2))
    assert featviz.hooks.hook_count(tiny) == 0


def test_files_and_pil_images_are_brought_to_the_model_size(tiny, photo, tmp_path):
    pic = Image.fromarray((photo.permute(1, 2, 0) * 255).byte().numpy()).resize((48, 40))
    pic.save(tmp_path / "p.png")
    for source in (pic, tmp_path / "p.png"):
        r = accentuate(tiny, source, "channel:conv3:1", steps=1, crops=2)
        assert r.image.shape == (3, 32, 32)
    out = r.save(tmp_path / "strip.png")
    with Image.open(out) as strip:
        assert strip.width > 3 * 32 and strip.height > 32
    assert r._repr_png_()[:4] == b"\x89PNG" and "conv3" in repr(r)


def test_inceptionv1_regularizes_a_whole_block(inceptionv1):
    assert default_layer(inceptionv1, channel("mixed4d", 1)) == "mixed4a"
