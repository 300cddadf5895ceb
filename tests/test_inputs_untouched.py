"""Every public function that takes an image works on its own copy: the caller's tensor comes
back with the same values, the same requires_grad flag, no gradient and no version bump."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny

import featviz
from featviz import deconv, featuremaps, inversion, metrics, param
from featviz import objectives as obj
from featviz import occlusion as occ

CALLS = {
    "deconv.project": lambda m, x: deconv.project(m, x, "conv2", 1),
    "deconv.project guided": lambda m, x: deconv.project(m, x, "conv3", 1, mode="guided"),
    "deconv.occlusion_check": lambda m, x: deconv.occlusion_check(m, x, "conv2", 1, patch=4,
                                                                   n_random=2),
    "occlusion": lambda m, x: occ.occlusion(m, x, "conv2", 1, patch=8, stride=8),
    "inversion.invert": lambda m, x: inversion.invert(m, x, "conv2", steps=2, progress=False),
    "inversion.caricature": lambda m, x: inversion.caricature(m, x, "conv2", steps=2,
                                                              progress=False),
    "featuremaps.capture": lambda m, x: featuremaps.capture(m, x, ["conv2"]),
    "featuremaps.top_classes": lambda m, x: featuremaps.top_classes(m, x),
    "featuremaps.compare": lambda m, x: featuremaps.compare(m, x, x.flip(-1), ["conv2"]),
    "metrics.objective_value": lambda m, x: metrics.objective_value(
        m, obj.channel("conv3", 1), x),
    "param.image(init=)": lambda m, x: featviz.render(
        m, obj.channel("conv3", 1), param.image(32, init=x, seed=0), steps=2, progress=False),
    "images.save": lambda m, x: featviz.images.save(x, "untouched.png"),
    "groups.neuron_groups": lambda m, x: featviz.groups.neuron_groups(m, x, "act3", k=2),
}


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("leaf_grad", [False, True])
def test_the_callers_image_comes_back_untouched(name, leaf_grad, one_thread, tmp_path,
                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = make_tiny()
    x = torch.rand(1, 3, 32, 32, requires_grad=leaf_grad)
    before, version = x.detach().clone(), x._version
    CALLS[name](model, x)
    assert x.requires_grad == leaf_grad and x.grad is None
    assert torch.equal(x.detach(), before) and x._version == version
