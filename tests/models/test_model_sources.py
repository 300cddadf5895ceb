"""Models from where users get them (issue 18): timm and Hugging Face ``transformers`` by name,
tuple and output-object returns, leading tokens, the middle layer, and the model zoo."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, hook_free, make_tiny
from PIL import Image
from torch import nn

import featviz
from featviz import objectives as obj
from featviz.core.hooks import LayerTap
from featviz.core.layouts import cls_key
from featviz.errors import FeatvizError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")
needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason='timm is not installed: pip install "featviz[timm]"')
needs_hf = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                              reason='transformers is not installed: pip install "featviz[hf]"')


def rises(result) -> bool:
    """The objective ends higher than it started, for every image."""
    return bool((result.history[-1] > result.history[0]).all())


def run(model: nn.Module, objective, steps: int = 12, **options):
    """A short render, seeded, recorded every 4 steps."""
    return featviz.render(model, objective, steps=steps, seed=0, record_every=4,
                          progress=False, **options)


# -- timm ------------------------------------------------------------------------------------
@needs_timm
@pytest.mark.heavy
def test_a_timm_resnet_by_name_renders_a_channel_and_a_logit():
    torch.manual_seed(0)
    model = featviz.models.load("timm:resnet18", weights=None)
    assert model.input_size == 224 and model.featviz_fixed_size is None
    assert model.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    channel = run(model, obj.channel("layer2.1", 3), size=32)
    # a random network's logit moves by a few thousandths in 12 steps, less than the fast
    # course's larger steps under random transforms move it; the careful course climbs it
    logit = run(model, obj.logit(7), size=32, pace="careful")
    assert rises(channel) and rises(logit)
    assert channel.images.shape == logit.images.shape == (1, 3, 32, 32)
    assert hook_free(model)


@needs_timm
def test_a_timm_vit_takes_its_size_from_the_options_and_timms_statistics():
    torch.manual_seed(0)
    model = featviz.models.load("timm:vit_tiny_patch16_224", weights=None, img_size=64)
    assert model.featviz_fixed_size == 64 and model.featviz_prefix_tokens == 1
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # timm's, not ImageNet's
    # it declares the transformer course (featviz.models.courses), whose 32-px jitter is
    # half of this 64-px input: lucid's small one keeps this 12-step test about sizes
    assert model.featviz_render == featviz.models.courses.TRANSFORMER
    for objective in (obj.channel("blocks.5", 4), obj.logit(2)):
        res = run(model, objective, size=48, transforms="standard")
        assert rises(res) and res.images.shape == (1, 3, 48, 48)  # shown to the model at 64


@needs_timm
def test_deit_distillation_token_is_a_second_leading_token():
    """DeiT's [B, 2 + N, C]: the class token apart, the distillation token dropped, the N
    patch tokens on the grid (found from timm's num_prefix_tokens, not guessed)."""
    model = featviz.models.load("timm:deit_tiny_distilled_patch16_224", weights=None,
                                img_size=32)
    assert model.featviz_prefix_tokens == 2
    raw = {}
    block = featviz.hooks.resolve_layer(model, "blocks.1")
    handle = block.register_forward_hook(lambda m, i, o: raw.__setitem__("out", o))
    with featviz.hooks.frozen(model), LayerTap(model, ["blocks.1"]) as tap, torch.no_grad():
        acts = tap(torch.rand(2, 3, 32, 32))
    handle.remove()
    tokens = raw["out"]
    assert tokens.shape == (2, 2 + 4, 192) and acts["blocks.1"].shape == (2, 192, 2, 2)
    assert torch.equal(acts[cls_key("blocks.1")], tokens[:, 0])
    assert torch.equal(acts["blocks.1"][:, :, 1, 0], tokens[:, 2 + 2])  # row 1, column 0


@needs_timm
def test_timm_weights_from_a_file_and_unknown_names(tmp_path):
    torch.manual_seed(0)
    first = featviz.models.load("timm:regnetx_002", weights=None)
    torch.save(first.net.state_dict(), tmp_path / "regnet.pth")
    again = featviz.models.load("timm:regnetx_002", weights=tmp_path / "regnet.pth")
    assert torch.equal(first.net.stem.conv.weight, again.net.stem.conv.weight)
    with pytest.raises(UnknownNameError, match="resnet18"):
        featviz.models.load("timm:resnet181", weights=None)
    with pytest.raises(TypeError, match="timm: and hf: models only"):
        featviz.models.load("resnet18", weights=None, img_size=64)


# -- Hugging Face ------------------------------------------------------------------------------
def small_hf_vit():
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, num_labels=10)
    net = transformers.ViTForImageClassification(config)
    nn.init.normal_(net.classifier.weight, std=0.5)  # a logit the image can move
    return net


@needs_hf
@pytest.mark.heavy
def test_a_hugging_face_vit_renders_a_logit_and_a_channel():
    model = featviz.models.wrap_hf(small_hf_vit())
    assert model.featviz_fixed_size == 32 and model.featviz_prefix_tokens == 1
    layer = featviz.models.middle_layer(model)
    logit, channel = run(model, obj.logit(3), 24), run(model, obj.channel(layer, 5), 24)
    assert rises(logit) and rises(channel) and hook_free(model)
    # the second block: a tensor in transformers 5, a tuple (hidden_states,) in 4
    last = "vit.layers.1" if hasattr(model.net.vit, "layers") else "vit.encoder.layer.1"
    with featviz.hooks.frozen(model), LayerTap(model, [last]) as tap, torch.no_grad():
        assert tap(torch.rand(1, 3, 32, 32))[last].shape == (1, 32, 4, 4)


@needs_hf
def test_hf_load_from_a_folder_takes_the_processors_statistics(tmp_path):
    import transformers

    net = small_hf_vit()
    net.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(
        tmp_path)
    model = featviz.models.load(f"hf:{tmp_path}")
    assert model.std.flatten().tolist() == [0.25] * 3 and model.name == f"hf:{tmp_path}"
    assert torch.equal(model.net.classifier.weight, net.classifier.weight)
    random = featviz.models.load(f"hf:{tmp_path}", weights=None)
    assert not torch.equal(random.net.classifier.weight, net.classifier.weight)


@pytest.mark.parametrize("name, package, extra", [("timm:resnet18", "timm", "timm"),
                                                   ("hf:google/vit-base-patch16-224",
                                                    "transformers", "hf")])
def test_a_missing_optional_package_says_how_to_install_it(monkeypatch, name, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails
    with pytest.raises(FeatvizError, match=rf'pip install "featviz\[{extra}\]"'):
        featviz.models.load(name, weights=None)


# -- the tap: output objects and tuples ---------------------------------------------------------
class Outputs(nn.Module):
    """Returns its logits in an object, as Hugging Face classifiers do; its block returns a
    tuple with one tensor, as transformers 4 layers do."""

    class Result:
        def __init__(self, logits):
            self.logits = logits

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x), None

    def __init__(self):
        super().__init__()
        self.block = self.Block()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.Result(self.fc(self.block(x)[0].mean((2, 3))))


def test_logits_come_from_an_output_object_and_a_lone_tensor_from_a_tuple():
    model = featviz.models.wrap(Outputs(), input_size=16)
    with featviz.hooks.frozen(model), LayerTap(model, ["block", ":output"]) as tap:
        acts = tap(torch.rand(2, 3, 16, 16))
    assert acts["block"].shape == (2, 8, 16, 16) and acts[":output"].shape == (2, 4)
    assert featviz.models.middle_layer(model) in ("block", "block.conv")

    class Pair(nn.Module):
        def forward(self, x):
            return x, x * 2

    with pytest.raises(FeatvizError, match="returns tuple, not a tensor"):
        featviz.render(nn.Sequential(Pair()), obj.channel("0", 0), size=8, steps=1,
                       progress=False)
    with pytest.raises(FeatvizError, match=r"returned tuple, not a tensor of logits.*\.logits"):
        featviz.render(nn.Sequential(nn.Conv2d(3, 3, 1), Pair()), obj.logit(0), size=8,
                       steps=1, progress=False)


def test_declared_leading_tokens_and_bad_layouts():
    class Tokens(nn.Module):  # 3 leading tokens, then a 2x2 grid
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 8)

        def forward(self, x):
            grid = nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)
            return self.embed(torch.cat([x.mean((2, 3))[:, None].expand(-1, 3, -1), grid], 1))

    model = featviz.models.wrap(Tokens(), input_size=16, layouts={"embed": "tokens+3"})
    with featviz.hooks.frozen(model), LayerTap(model, ["embed"]) as tap, torch.no_grad():
        assert tap(torch.rand(1, 3, 16, 16))["embed"].shape == (1, 8, 2, 2)
    with pytest.raises(FeatvizError, match=r"'tokens\+x' declared for 'embed' is not one of"):
        LayerTap(featviz.models.wrap(Tokens(), layouts={"embed": "tokens+x"}), ["embed"])


def test_the_middle_layer_of_a_small_net():
    model = make_tiny()
    layers = featviz.models.spatial_layers(model)
    assert [s.name for s in layers] == ["conv1", "relu", "conv2", "conv3", "act3", "tail"]
    assert layers[2].grid == (16, 16) and layers[2].channels == 16
    assert featviz.models.middle_layer(model) == "conv3"

    class WithBias(nn.Module):  # a bias map computed once for all images, as Swin v2's
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bias = nn.Conv2d(2, 4, 1)

        def forward(self, x):
            return self.conv(x) + self.bias(torch.ones(1, 2, *x.shape[-2:]))

    assert [s.name for s in featviz.models.spatial_layers(featviz.models.wrap(
        WithBias(), input_size=8))] == ["conv"]
    with pytest.raises(FeatvizError, match="no layer of the model gives a spatial map"):
        featviz.models.middle_layer(featviz.models.wrap(
            nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), input_size=8))


class _TinyAttentionNet(nn.Module):
    """Patch tokens through one attention block whose weights pass through modules of their
    own: ``softmax`` gives [B, heads, N, N], ``talk`` (CaiT's talking heads) [B, N, N, heads]."""

    def __init__(self, heads: int = 4, dim: int = 8):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.qk = nn.Linear(dim, 2 * dim)
        self.softmax = nn.Softmax(dim=-1)
        self.talk = nn.Linear(heads, heads)
        self.out = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # [B, N, C]
        q, k = self.qk(t).chunk(2, dim=-1)
        b, n, c = q.shape
        q, k = (z.reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for z in (q, k))
        attn = self.softmax(q @ k.transpose(-1, -2))  # [B, heads, N, N]
        attn = self.talk(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.out(t + attn.mean(1) @ t)


def test_attention_weights_are_no_spatial_layer():
    model = featviz.models.wrap(_TinyAttentionNet(), input_size=32)
    names = [s.name for s in featviz.models.spatial_layers(model)]
    assert "patch" in names and "out" in names
    assert "softmax" not in names and "talk" not in names  # token x token, not a 8x8 grid


# -- the zoo ------------------------------------------------------------------------------------
@pytest.mark.heavy
def test_the_model_zoo_quick_run_prints_its_table():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(Path(REPO, "benchmarks", "model_zoo.py")),
                           "--quick", "--steps", "1", "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "| model | layer | layout | ok | ms/step |" in out
    assert "| squeezenet1_1 | features." in out and "models rendered" in out
    total = [line for line in out.splitlines() if line.endswith("models rendered")][0]
    done, tried = total.split()[0].split("/")
    assert done == tried and int(tried) >= 1  # torchvision alone where timm is absent


@needs_timm
def test_a_grayscale_timm_model_from_the_command_line(tmp_path, capsys):
    """``--option in_chans=1`` builds a 1-channel timm net; its statistics become one value
    (timm keeps the RGB ones in its config), the render is a grayscale PNG and a photo is
    read as luminance for deconv."""
    gray = featviz.models.load("timm:resnet18", weights=None, in_chans=1)
    assert gray.mean.numel() == 1 and abs(float(gray.mean[0]) - 0.449) < 1e-3
    common = ["--model", "timm:resnet18", "--weights", "random", "--option", "in_chans=1",
              "--size", "32", "--device", "cpu"]
    assert featviz.cli.main(["render", *common, "--objective", "channel:layer2:0", "--steps",
                             "2", "--no-progress", "--out", str(tmp_path / "g.png")]) == 0
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    assert featviz.cli.main(["deconv", str(tmp_path / "red.png"), *common, "--layer", "layer2",
                             "--channel", "0", "--out", str(tmp_path / "d.png")]) == 0
    assert featviz.cli.main(["layers", *common[:6]]) == 0
    assert "layer4" in capsys.readouterr().out
    assert featviz.cli.main(["layers", "--model", "resnet18", "--weights", "random",
                             "--option", "in_chans=1"]) == 2
    assert "for timm:NAME and hf:ID models only, not 'resnet18'" in capsys.readouterr().err


def test_model_options_are_read_as_the_values_they_spell():
    from featviz.face.arguments import model_option

    assert model_option("in_chans=1") == ("in_chans", 1)
    assert model_option("drop_rate=0.1") == ("drop_rate", 0.1)
    assert model_option("global_pool=avg") == ("global_pool", "avg")
    assert model_option("pretrained_strict=false") == ("pretrained_strict", False)
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE.*'in_chans'"):
        model_option("in_chans")


def test_weights_from_a_safetensors_file(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    net = make_tiny()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    safetensors.save_file(state, str(tmp_path / "w.safetensors"))
    read = featviz.models.read_state_dict(tmp_path / "w.safetensors")
    assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file of tensors")
    with pytest.raises(featviz.WeightsError, match="cannot read weights file .*bad.safetensors"):
        featviz.models.read_state_dict(tmp_path / "bad.safetensors")
