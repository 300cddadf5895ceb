"""render's ``views``: several randomly transformed copies of each image per step, their
objectives averaged (augmentation ensembling). One view is a plain render; batching never
changes an image; each step runs the model on views x images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import featviz
from featviz.errors import FeatvizError

KW = dict(steps=6, size=32, seed=3, progress=False)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()


def test_one_view_is_a_plain_render_and_more_change_the_images():
    model = _tiny()
    plain = featviz.render(model, "channel:2:0", batch=2, **KW).images
    assert torch.equal(plain, featviz.render(model, "channel:2:0", batch=2, views=1,
                                             **KW).images)
    assert not torch.equal(plain, featviz.render(model, "channel:2:0", batch=2, views=3,
                                                 **KW).images)


def test_batching_never_changes_an_image_with_views():
    model = _tiny()
    pair = featviz.render(model, "channel:2:0", batch=2, views=3, **KW).images
    alone = featviz.render(model, "channel:2:0", batch=1, views=3,
                           **{**KW, "seed": KW["seed"] + 1}).images
    assert torch.equal(pair[1:], alone)


def test_each_step_sees_every_view_and_the_objective_is_their_mean():
    model = _tiny()
    seen = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        featviz.render(model, "channel:2:0", batch=2, views=4, polish=2, **KW)
    finally:
        handle.remove()
    # 4 transformed steps of 2 images x 4 views, then the 2 polish steps see each image once
    assert [n for n in seen if n > 1] == [8] * 4 + [2] * 2, seen  # (1: probes of the size)
    # without transforms the views are one image four times: the mean is that image's value
    same = featviz.render(model, "channel:2:0", batch=2, views=4, transforms="none", **KW)
    one = featviz.render(model, "channel:2:0", batch=2, transforms="none", **KW)
    assert torch.allclose(same.images, one.images, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_a_bad_number_of_views_is_named(bad):
    with pytest.raises(FeatvizError, match="views must be a whole number >= 1"):
        featviz.render(_tiny(), "channel:2:0", views=bad, **KW)
