"""ViT-Tiny/16 by name (``featviz.models.load("vit_tiny")``, issue 43) and the transformer
objectives (:mod:`featviz.core.objectives.transformer`): their strings on any machine, and on
the real AugReg weights in ``../shared/models`` (skipped where absent) that the preprocessing
is right, that each objective rises, that tokens map to their patches, that the class-token
objective reads no patch, and that the attention objectives are timm's own numbers."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from conftest import IMAGES, SHARED

import featviz
from featviz import objectives as obj
from featviz.core.layouts import cls_key
from featviz.errors import ChannelError, FeatvizError, WeightsError
from featviz.hooks import LayerTap, frozen
from featviz.models import loading, vit

VIT_FILE = SHARED / "models" / vit.VIT_TINY_FILE
SAMPLE = SHARED / "imagenet-sample"
GRID = 14  # patches per side at 224 px
real = pytest.mark.real
needs_vit = pytest.mark.skipif(
    not VIT_FILE.is_file(),
    reason=f"real ViT-Tiny weights not found at {VIT_FILE} (set FEATVIZ_SHARED to the folder "
           "holding models/ and images/)")


# -- the strings and names, on any machine -------------------------------------------------
MLP6 = "blocks.6.mlp.act", "blocks.6.mlp.fc1"  # an MLP unit's value, and where it climbs


@pytest.mark.parametrize("text, name, layer", [
    ("mlp:blocks.6:123", "mlp(blocks.6, 123)", MLP6),
    ("mlp:blocks.6:123:4:7", "mlp(blocks.6, 123, x=4, y=7)", MLP6),
    ("mlp_cls:blocks.6:123", "mlp_cls(blocks.6, 123)", MLP6),
    ("attn_head:blocks.6:2", "attn_head(blocks.6, 2)", "blocks.6.attn.qkv"),
    ("attn_head:blocks.6:2:17", "attn_head(blocks.6, 2, n=17)", "blocks.6.attn.qkv"),
    ("attention:blocks.6:0:5:7", "attention(blocks.6, 0, 5, 7)", "blocks.6.attn.qkv"),
    ("attention:blocks.6:0:5:7:3:3", "attention(blocks.6, 0, 5, 7, qx=3, qy=3)",
     "blocks.6.attn.qkv"),
])
def test_each_kind_has_a_string(text, name, layer):
    layers = set(layer) if isinstance(layer, tuple) else {layer}
    o = obj.parse(text)
    assert o.name == name and o.layers == layers
    assert obj.parse(f"{text} - 0.5*{text}").layers == layers


def test_the_python_forms_and_their_defaults():
    assert obj.mlp("blocks.3", 5, pre=True).layers == {"blocks.3.mlp.fc1"}
    assert obj.mlp("blocks.3.mlp", 5).layers == {"blocks.3.mlp.act", "blocks.3.mlp.fc1"}
    assert obj.attention("blocks.3.attn", 1, 0, 0).layers == {"blocks.3.attn.qkv"}
    assert obj.mlp("blocks.3", 5, batch=1).name == "mlp(blocks.3, 5)@1"
    with pytest.raises(ValueError, match="both x and y"):
        obj.mlp("blocks.3", 5, x=2)
    with pytest.raises(ValueError, match="both qx and qy"):
        obj.attention("blocks.3", 0, 1, 1, qy=2)
    with pytest.raises(ChannelError, match="out of range for a head"):
        obj.attn_head("blocks.3", 0, 64)


def test_no_kind_takes_a_timm_layer_name_from_the_short_form():
    """timm's classifier is ``head``: ``head:5`` stays channel 5 of it (why the head
    objective is ``attn_head``)."""
    assert obj.parse("head:5").name == "channel(head, 5)"


# -- the real ViT-Tiny -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_tiny():
    """ViT-Tiny with the real AugReg weights, as ``load("vit_tiny")`` builds it."""
    if not VIT_FILE.is_file():
        pytest.skip(f"real ViT-Tiny weights not found at {VIT_FILE}")
    return featviz.models.load("vit_tiny", weights=VIT_FILE)


@pytest.fixture(scope="module")
def photos():
    return torch.cat([featviz.images.load(p, size=224)
                      for p in featviz.images.list_images(IMAGES)])


def _values(model, objectives, images):
    """Each objective on its own image of ``images``, read without transforms."""
    total = obj.Objective.sum([o.on(i) for i, o in enumerate(objectives)])
    with frozen(model), LayerTap(model, total.layers) as tap, torch.no_grad():
        acts = tap(images)
    return [float(o(acts)[i]) for i, o in enumerate(objectives)]


@real
@needs_vit
def test_default_weights_are_found_in_featviz_models(monkeypatch):
    monkeypatch.setenv("FEATVIZ_MODELS", str(VIT_FILE.parent))
    assert loading.resolve_weights(vit.SPEC.weights, "vit_tiny", "default") == VIT_FILE
    monkeypatch.delenv("FEATVIZ_MODELS")
    with pytest.raises(WeightsError, match=vit.VIT_TINY_FILE):
        featviz.models.load("vit_tiny")


@real
def test_loads_by_name_with_augregs_preprocessing(vit_tiny):
    """Mean = std = 0.5, 224 px only, ImageNet's names, the token layers declared, and the
    accuracy the README measures (80.4 % top-1 on all 1000) on every 20th sample photo."""
    assert vit_tiny.mean.flatten().tolist() == [0.5] * 3 == vit_tiny.std.flatten().tolist()
    assert vit_tiny.featviz_fixed_size == 224 and vit_tiny.featviz_classes[291] == "lion"
    assert vit_tiny.featviz_layouts["blocks.6.mlp.fc1"] == "tokens+cls"
    rows = list(csv.DictReader((SAMPLE / "labels.tsv").open(), delimiter="\t"))[::20]
    x = torch.cat([featviz.images.load(SAMPLE / r["file"], size=224) for r in rows])
    with torch.no_grad():
        top = torch.cat([vit_tiny(part).argmax(1) for part in x.split(25)])
    right = sum(int(t) == int(r["class_index"]) for t, r in zip(top, rows, strict=True))
    assert right >= 0.7 * len(rows), f"{right}/{len(rows)}"


@real
def test_the_timm_name_takes_the_same_preprocessing(vit_tiny, photos):
    """timm's own data config for this model says 0.5 too: ``timm:`` gives the same logits."""
    other = featviz.models.load("timm:vit_tiny_patch16_224", weights=VIT_FILE)
    assert other.mean.flatten().tolist() == [0.5] * 3 == other.std.flatten().tolist()
    with torch.no_grad():
        torch.testing.assert_close(other(photos[:2]), vit_tiny(photos[:2]))


@real
def test_every_objective_rises(vit_tiny):
    """A 16-step render from lucid's grey start lifts each objective clearly (by 0.3 to 20,
    or 3 to 100 times for the attention objectives), all in one batch, one image each."""
    torch.manual_seed(0)
    layer = "blocks.2"  # early: the render stops there, which keeps the test short
    cases = [obj.mlp(layer, 100), obj.mlp(layer, 40, x=4, y=9), obj.mlp_cls(layer, 500),
             obj.mlp(layer, 7, pre=True), obj.direction(layer, torch.randn(192)),
             obj.attn_head(layer, 2), obj.attention(layer, 0, 5, 7),
             obj.attention(layer, 1, 9, 9, qx=10, qy=10)]
    total = obj.Objective.sum([o.on(i) for i, o in enumerate(cases)])
    # lucid's small jitter, not the transformer course's 32 px: objectives at one patch
    # need their patch to stay near its place (docs/transformers.md)
    kw = dict(size=224, seed=0, progress=False, transforms="standard")
    start = featviz.render(vit_tiny, total, steps=0, **kw).images
    end = featviz.render(vit_tiny, total, steps=16, **kw).images
    before, after = _values(vit_tiny, cases, start), _values(vit_tiny, cases, end)
    report = {o.name: (round(a, 4), round(b, 4)) for o, a, b in zip(cases, before, after,
                                                                    strict=True)}
    # a clear margin: at least 0.2 above the start, or twice it for the attention weights
    # (values in [0, 1]; the class token's starts near 0, the patch's to its upper-left
    # neighbour, in a head that attends to neighbours, near 0.08)
    assert all(b > a + 0.2 or (a > 0 and b > 2 * a)
               for a, b in zip(before, after, strict=True)), report


@real
def test_the_logit_rises(vit_tiny):
    kw = dict(size=224, seed=0, progress=False)
    start = featviz.render(vit_tiny, "logit:291", steps=0, **kw).images
    end = featviz.render(vit_tiny, "logit:291", steps=8, **kw).images
    before, after = _values(vit_tiny, [obj.logit(291)] * 2, torch.cat([start, end]))
    assert after > before + 5, (before, after)


@real
def test_a_patch_neuron_moves_its_own_patch_most(vit_tiny, photos):
    """The input gradient of a unit at patch (x, y), summed over each 16-px patch of the
    image, is largest in that patch (row-major tokens after the class token), in block 5 of
    12 too, where attention has mixed the tokens five times."""
    spots = [(40, 4, 9), (100, 0, 0), (500, 13, 6)]
    cases = [obj.mlp("blocks.5", u, x=x, y=y) for u, x, y in spots]
    total = obj.Objective.sum([o.on(i) for i, o in enumerate(cases)])
    img = photos[:1].repeat(len(spots), 1, 1, 1).requires_grad_(True)
    with frozen(vit_tiny), LayerTap(vit_tiny, total.layers) as tap:
        grad, = torch.autograd.grad(total(tap(img)).sum(), img)
    energy = grad.abs().sum(1).unfold(1, 16, 16).unfold(2, 16, 16).sum((-1, -2))
    for i, (_, x, y) in enumerate(spots):
        assert divmod(int(energy[i].argmax()), GRID) == (y, x), cases[i].name


@real
def test_the_class_token_objective_reads_no_patch_token(vit_tiny, photos):
    """mlp_cls's gradient to the patch tokens of its layer is none, and replacing them
    changes nothing; the patch mean is the other way round."""
    cls_o, mean_o = obj.mlp_cls("blocks.6", 123), obj.mlp("blocks.6", 123)
    path = "blocks.6.mlp.act"
    with frozen(vit_tiny), LayerTap(vit_tiny, list(MLP6)) as tap, torch.no_grad():
        acts = dict(tap(photos[:2]))
    patches = acts[path].clone().requires_grad_(True)
    # the patches are the only tensor that needs a gradient: a value without one never
    # touched them
    assert not cls_o({**acts, path: patches}).requires_grad
    assert mean_o({**acts, path: patches}).requires_grad
    noise = {**acts, path: torch.randn_like(acts[path])}
    assert torch.equal(cls_o(noise), cls_o(acts))
    assert not torch.allclose(mean_o(noise), mean_o(acts))
    other_cls = {**acts, cls_key(path): torch.randn_like(acts[cls_key(path)])}
    assert torch.equal(mean_o(other_cls), mean_o(acts))


def test_an_mlp_unit_is_the_gelus_output_and_climbs_out_of_its_falling_branch():
    """mlp's value is the unit after the GELU; its gradient, where the unit's input is
    negative, is the input's (slope 1, toward the active side), elsewhere the GELU's."""
    torch.manual_seed(0)
    pre = (torch.randn(2, 8, 14, 14) * 2).requires_grad_(True)
    post = torch.nn.functional.gelu(pre)
    o = obj.mlp("blocks.3", 5)
    value = o({"blocks.3.mlp.act": post, "blocks.3.mlp.fc1": pre})
    assert torch.allclose(value, post[:, 5].mean(dim=(1, 2)))
    grad, = torch.autograd.grad(value.sum(), pre)
    unit = pre[:, 5].detach()
    negative = unit < 0
    # the patch mean gives each patch 1/196 of the value
    assert torch.allclose(grad[:, 5][negative], torch.full_like(unit[negative], 1 / 196))
    gelu_slope = torch.ops.aten.gelu_backward(torch.ones_like(unit), unit)
    assert torch.allclose(grad[:, 5][~negative], gelu_slope[~negative] / 196)
    assert not grad[:, :5].any() and not grad[:, 6:].any()
    # where the GELU falls, plain ascent would push the unit further down
    assert (gelu_slope[unit < -0.8] < 0).all() and (unit < -0.8).any()


@real
def test_units_that_start_where_the_gelu_falls_rise(vit_tiny):
    """Block-4 unit 507 starts left of the GELU's minimum on the grey start image: plain
    ascent on the GELU's output leaves it just below 0, mlp's gradient lifts it."""
    kw = dict(size=224, seed=0, progress=False, steps=24)
    plain = featviz.render(vit_tiny, obj.channel("blocks.4.mlp.act", 507), **kw).images
    climbed = featviz.render(vit_tiny, obj.mlp("blocks.4", 507), **kw).images
    plain_v, climbed_v = _values(vit_tiny, [obj.mlp("blocks.4", 507)] * 2,
                                 torch.cat([plain, climbed]))
    assert plain_v < 0.05 and climbed_v > 1.0, (plain_v, climbed_v)


def _timm_attention(model, images, block):
    """Block ``block``'s softmax weights [B, heads, N, N] and its attention output before the
    projection [B, N, 192], read from a copy of the network on timm's non-fused path."""
    net = copy.deepcopy(model.net)
    attn = net.blocks[block].attn
    attn.fused_attn = False  # the weights exist only on this path
    seen = {}
    attn.attn_drop.register_forward_hook(lambda m, i, out: seen.setdefault("weights", out))
    attn.proj.register_forward_pre_hook(lambda m, args: seen.setdefault("heads", args[0]))
    with torch.no_grad():
        net((images - model.mean) / model.std)
    return seen["weights"], seen["heads"]


@real
def test_the_attention_objectives_are_timms_numbers(vit_tiny, photos):
    """attention() equals the softmax weight timm's non-fused attention computes (from the
    class token and from a patch), attn_head() the mean of its head's slice of what
    ``attn.proj`` takes in, though the model itself runs the fused kernel."""
    block, head, x, y, qx, qy = 4, 1, 5, 7, 10, 2
    weights, heads = _timm_attention(vit_tiny, photos[:3], block)
    cases = [obj.attention(f"blocks.{block}", head, x, y),
             obj.attention(f"blocks.{block}", head, x, y, qx=qx, qy=qy),
             obj.attn_head(f"blocks.{block}", head), obj.attn_head(f"blocks.{block}", head, 17)]
    with frozen(vit_tiny), LayerTap(vit_tiny, {f"blocks.{block}.attn.qkv"}) as tap, \
            torch.no_grad():
        acts = tap(photos[:3])
    key = 1 + y * GRID + x
    mine = heads[:, 1:, 64 * head:64 * (head + 1)]  # the patches' rows of this head
    expected = [weights[:, head, 0, key], weights[:, head, 1 + qy * GRID + qx, key],
                mine.mean(dim=(1, 2)), mine[:, :, 17].mean(dim=1)]
    for o, want in zip(cases, expected, strict=True):
        torch.testing.assert_close(o(acts), want, rtol=1e-4, atol=1e-6, msg=o.name)
    assert vit_tiny.net.blocks[block].attn.fused_attn  # what the objectives ran beside


@real
def test_wrong_heads_and_positions_say_what_is_valid(vit_tiny, photos):
    with frozen(vit_tiny), LayerTap(vit_tiny, ["blocks.1.attn.qkv"]) as tap, torch.no_grad():
        acts = tap(photos[:1])
    with pytest.raises(ChannelError, match="valid: 0-2"):
        obj.attn_head("blocks.1", 3)(acts)
    with pytest.raises(ChannelError, match="x 0-13"):
        obj.attention("blocks.1", 0, 14, 0)(acts)
    with pytest.raises(ChannelError, match="head_dim"):
        obj.attention("blocks.1", 0, 1, 1, head_dim=100)(acts)
    with pytest.raises(FeatvizError, match="no class token"):
        obj.attention("blocks.1", 0, 1, 1)({"blocks.1.attn.qkv": acts["blocks.1.attn.qkv"]})
