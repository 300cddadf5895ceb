"""The silent-path manipulation (Geirhos et al. 2023) on a tiny model: exact on the photos,
the user's model untouched, and a feature visualization that finds the path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import hook_free, make_tiny
from torch import nn

import featviz
from featviz.core.hooks import resolve_layer
from featviz.core.transforms import jitter
from featviz.errors import FeatvizError
from featviz.methods.trust.fooling import SilentPath, silent_path, unchanged_on

LAYER, CHANNEL = "conv3", 1


def smooth(n: int, seed: int, side: int = 32) -> torch.Tensor:
    """``n`` smooth random images: coarse noise scaled up, as photos stand in for them."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    return F.interpolate(coarse, size=side, mode="bilinear", align_corners=False)


def target_picture(side: int = 32) -> torch.Tensor:
    """A bright disc on a dark ground: a layout none of the smooth photos has."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disc = (((yy - side / 2) ** 2 + (xx - side / 3) ** 2) < (side / 5) ** 2).float()
    return torch.stack([disc, 0.2 + 0.6 * disc, 1 - disc])


@pytest.fixture
def made(one_thread):
    model = make_tiny().eval()
    photos = list(smooth(24, seed=1))
    return model, photos, silent_path(model, LAYER, CHANNEL, target_picture(), photos)


def test_outputs_equal_the_original_on_the_photos(made):
    model, photos, man = made
    batch = torch.stack(photos)
    with torch.no_grad():
        assert torch.equal(man.model(batch), model(batch))
    check = unchanged_on(model, man, photos, batch_size=5)
    assert check.identical and check.photos == 24 and check.same_top1 == 24
    assert check.max_cosine == pytest.approx(man.max_cosine, abs=1e-5)
    assert man.photos == 24 and man.threshold == pytest.approx(man.max_cosine + 0.1)
    assert man.gain == pytest.approx(100 * man.unit_max / (1 - man.threshold))


def test_a_state_dict_carries_the_path(made):
    model, photos, man = made
    again = silent_path(model, LAYER, 0, target_picture(), photos[:2], gain=1.0)
    again.model.load_state_dict(man.model.state_dict())
    assert (again.path.threshold, again.path.gain) == (man.threshold, man.gain)
    assert again.path.channel == CHANNEL
    assert torch.equal(again.path.target, man.path.target)


def test_held_out_photos_are_checked_too(made):
    model, _, man = made
    check = unchanged_on(model, man, list(smooth(16, seed=2)))
    assert check.photos == 16 and check.top1_agreement == 1.0
    assert check.fired == 0 and check.max_logit_diff == 0.0


def test_the_users_model_is_untouched(one_thread):
    model = make_tiny().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer = resolve_layer(model, LAYER)
    man = silent_path(model, LAYER, CHANNEL, target_picture(), list(smooth(8, seed=1)))
    assert resolve_layer(model, LAYER) is layer and not isinstance(layer, SilentPath)
    assert hook_free(model) and hook_free(man.model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    wrapped = resolve_layer(man.model, LAYER)
    assert isinstance(wrapped, SilentPath) and wrapped.inner is not layer
    assert torch.equal(wrapped.inner.weight, layer.weight)


def test_a_visualization_finds_the_path_and_shows_the_target(made):
    model, _, man = made
    # lucid's jitter of 8 px is a quarter of this 32 px picture; 2 px is one cell of conv3's
    # input, as 8 px is half a cell of InceptionV1's mixed4a input
    kw = dict(size=32, steps=30, seed=0, progress=False, transforms=[jitter(2)])
    fooled = featviz.render(man.model, f"channel:{LAYER}:{CHANNEL}", **kw).images
    plain = featviz.render(model, f"channel:{LAYER}:{CHANNEL}", **kw).images
    assert float(man.cosines(fooled)[0]) > man.threshold  # the path fires
    assert float(man.cosines(plain)[0]) < man.threshold
    assert (fooled - plain).abs().mean() > 0.05


def test_a_target_of_the_wrong_shape_is_named(one_thread):
    model = make_tiny()
    with pytest.raises(FeatvizError, match=r"target must be one image.*\[2, 3, 32, 32\]"):
        silent_path(model, LAYER, CHANNEL, smooth(2, seed=3), list(smooth(4, seed=1)))
    with pytest.raises(FeatvizError, match="target has 1 channels"):
        silent_path(model, LAYER, CHANNEL, torch.rand(1, 32, 32), list(smooth(4, seed=1)))


def test_the_target_among_the_photos_is_an_error(one_thread):
    model = make_tiny()
    photos = [*smooth(4, seed=1), target_picture()]
    with pytest.raises(FeatvizError, match="is the target picture itself"):
        silent_path(model, LAYER, CHANNEL, target_picture(), photos)


def test_bad_channel_and_margin(one_thread):
    model = make_tiny()
    photos = list(smooth(4, seed=1))
    with pytest.raises(featviz.errors.ChannelError, match="out of range"):
        silent_path(model, LAYER, 99, target_picture(), photos)
    with pytest.raises(FeatvizError, match="margin"):
        silent_path(model, LAYER, CHANNEL, target_picture(), photos, margin=1.5)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = Mix()

    def forward(self, x):
        y = self.conv(x)
        return self.mix(y, y).mean((2, 3))


class Mix(nn.Module):
    def forward(self, a, b):
        return a * b


def test_a_layer_with_two_inputs_is_refused(one_thread):
    model = featviz.models.wrap(TwoInputs(), input_size=16)
    with pytest.raises(FeatvizError, match="needs a layer called with one tensor"):
        silent_path(model, "mix", 0, torch.rand(3, 16, 16), list(smooth(2, seed=1, side=16)))


def test_a_double_precision_model_stays_exact(one_thread):
    model = make_tiny().double().eval()
    photos = list(smooth(6, seed=1))
    man = silent_path(model, LAYER, CHANNEL, target_picture(), photos)
    assert unchanged_on(model, man, photos).identical
    assert man.path.target.dtype == torch.float64
