"""Checks on the real pretrained MobileNetV2 (skipped where ../shared/models is absent)."""

from __future__ import annotations

import torch
from conftest import IMAGES, hook_free

import featviz
from featviz import objectives as obj
from featviz.hooks import LayerTap, frozen


def _photos(size: int = 224) -> torch.Tensor:
    return torch.cat([featviz.images.load(p, size=size)
                      for p in featviz.images.list_images(IMAGES)])


def test_classifies_sample_photos(mobilenet):
    img = featviz.images.load(IMAGES / "cat.jpg", size=224, fit="resize")
    with torch.no_grad():
        top = mobilenet(img).softmax(1)[0]
    assert int(top.argmax()) == 285  # Egyptian cat
    assert 0.6 < float(top.max()) < 0.95


def test_render_beats_every_photo(mobilenet):
    """A short render already drives a channel far above what any photo does, unsaturated."""
    layer, c = "features.4", 5
    res = featviz.render(mobilenet, obj.channel(layer, c), steps=64, size=224, seed=0,
                         progress=False)
    with frozen(mobilenet), LayerTap(mobilenet, [layer]) as tap, torch.no_grad():
        rendered = tap(res.images)[layer][0, c].mean()
        best_photo = tap(_photos())[layer][:, c].mean(dim=(1, 2)).max()
    assert rendered > 3 * best_photo, (float(rendered), float(best_photo))
    saturated = ((res.images <= 0.02) | (res.images >= 0.98)).any(dim=1).float().mean()
    assert saturated < 0.05
    assert hook_free(mobilenet)


def test_early_stop_is_exact_on_real_model(mobilenet):
    x = _photos()[:2]
    full_in = x.clone().requires_grad_(True)
    with frozen(mobilenet), LayerTap(mobilenet, ["features.7", featviz.hooks.OUTPUT]) as tap:
        full = tap(full_in)["features.7"]
    full[:, 3].sum().backward()
    with frozen(mobilenet), LayerTap(mobilenet, ["features.7"]) as tap:
        tap(x)
        early_in = x.clone().requires_grad_(True)
        early = tap(early_in)["features.7"]
    early[:, 3].sum().backward()
    torch.testing.assert_close(early, full, rtol=0, atol=0)
    torch.testing.assert_close(early_in.grad, full_in.grad, rtol=0, atol=0)


def test_projection_passes_the_occlusion_check(mobilenet):
    """Covering where the deconvnet projection is largest drops the activation more than
    covering random squares, for at least 80% of the channels tried."""
    from featviz import deconv

    wins, tried = 0, 0
    for layer in ("features.7", "features.14"):
        top = deconv.top_k(mobilenet, IMAGES, layer, range(6), k=1)
        for c, entries in top.entries.items():
            img = featviz.images.load(entries[0].source, size=224)
            highlighted, random = deconv.occlusion_check(mobilenet, img, layer, c)
            wins += highlighted > random
            tried += 1
    assert wins >= 0.8 * tried, f"{wins}/{tried}"
    assert hook_free(mobilenet)


def test_bf16_objective_within_a_few_percent_of_fp32(mobilenet):
    """amp=True reaches the objective of float32 within a few percent (measured on this CPU:
    per image 0.99-1.01 at features.10, 128 steps; `python benchmarks/fast_paths.py` prints
    more). Runs on CUDA as well when a GPU is present."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    objective = obj.channel("features.10", [1, 2, 3, 4])
    kw = dict(steps=128, size=96, progress=False, seed=[1, 2, 3, 4])
    try:
        for device in devices:
            model = mobilenet.to(device)
            fp32 = featviz.render(model, objective, **kw)
            bf16 = featviz.render(model, objective, amp=True, **kw)
            ratio = bf16.values / fp32.values
            assert (ratio - 1).abs().max() < 0.06, (device, ratio)
            assert abs(float(ratio.mean()) - 1) < 0.025, (device, ratio)
    finally:
        mobilenet.to("cpu")
