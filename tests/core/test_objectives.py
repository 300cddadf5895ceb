"""Objectives compute what they claim, combine correctly and reject bad input clearly."""

from __future__ import annotations

import pytest
import torch

from featviz import objectives as obj
from featviz.errors import ChannelError, FeatvizError, ObjectiveSyntaxError
from featviz.hooks import INPUT, OUTPUT


@pytest.fixture
def acts():
    torch.manual_seed(0)
    return {
        "conv": torch.randn(4, 6, 5, 7),
        "vec": torch.randn(4, 6),
        "tokens": torch.randn(4, 9, 6),
        OUTPUT: torch.randn(4, 10),
        INPUT: torch.rand(4, 3, 8, 8),
    }


def test_channel_neuron_layer(acts):
    a = acts["conv"]
    torch.testing.assert_close(obj.channel("conv", 2)(acts), a[:, 2].mean(dim=(1, 2)))
    torch.testing.assert_close(obj.neuron("conv", 2)(acts), a[:, 2, 2, 3])  # centre of 5x7
    torch.testing.assert_close(obj.neuron("conv", 2, x=6, y=0)(acts), a[:, 2, 0, 6])
    torch.testing.assert_close(obj.layer("conv")(acts), (a ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(obj.channel("vec", 5)(acts), acts["vec"][:, 5])
    torch.testing.assert_close(obj.channel("tokens", 1)(acts), acts["tokens"][..., 1].mean(1))


def test_class_objectives(acts):
    out = acts[OUTPUT]
    torch.testing.assert_close(obj.logit(3)(acts), out[:, 3])
    torch.testing.assert_close(obj.softmax(3)(acts), torch.softmax(out, 1)[:, 3])
    assert obj.logit(3).layers == {OUTPUT}


def test_direction(acts):
    v = torch.randn(6)
    expected = (acts["conv"] * v[None, :, None, None]).sum(1).mean(dim=(1, 2))
    torch.testing.assert_close(obj.direction("conv", v)(acts), expected)
    onehot = torch.zeros(6)
    onehot[4] = 1
    torch.testing.assert_close(obj.direction("conv", onehot)(acts), obj.channel("conv", 4)(acts))


def test_algebra_weights_are_not_mixed_up(acts):
    """2*A + 3*B must be 2A + 3B (xplique once computed 6A + 3B)."""
    a, b = obj.channel("conv", 0), obj.channel("conv", 1)
    va, vb = a(acts), b(acts)
    torch.testing.assert_close((2 * a + 3 * b)(acts), 2 * va + 3 * vb)
    torch.testing.assert_close((a - b / 2)(acts), va - vb / 2)
    torch.testing.assert_close((-a + 1)(acts), 1 - va)
    torch.testing.assert_close((a * b)(acts), va * vb)
    torch.testing.assert_close(sum([a, b])(acts), va + vb)
    torch.testing.assert_close(obj.Objective.sum([a, b, a])(acts), 2 * va + vb)
    assert (a + obj.logit(1)).layers == {"conv", OUTPUT}


def test_batch_index_drives_one_image(acts):
    o = obj.channel("conv", 0, batch=1) + obj.channel("conv", 3, batch=2)
    v = o(acts)
    a = acts["conv"]
    torch.testing.assert_close(v, torch.stack([torch.tensor(0.0), a[1, 0].mean(),
                                               a[2, 3].mean(), torch.tensor(0.0)]))
    assert o.batch_size == 3
    assert o.label(1) == "channel(conv, 0)" and o.label(2) == "channel(conv, 3)"


def test_channel_list_is_per_image(acts):
    v = obj.channel("conv", [5, 0, 2])(acts)
    a = acts["conv"]
    torch.testing.assert_close(v[:3], torch.stack([a[0, 5].mean(), a[1, 0].mean(),
                                                   a[2, 2].mean()]))
    assert v[3] == 0


def test_gradient_reaches_only_driven_image(acts):
    a = acts["conv"].clone().requires_grad_(True)
    obj.channel("conv", 1, batch=2)({"conv": a}).sum().backward()
    assert a.grad[2, 1].abs().sum() > 0
    assert a.grad[[0, 1, 3]].abs().sum() == 0 and a.grad[2, 0].abs().sum() == 0


def test_diversity_prefers_different_styles():
    same = torch.randn(1, 4, 6, 6).repeat(3, 1, 1, 1)
    diff = torch.randn(3, 4, 6, 6)
    d = obj.diversity("x")
    assert torch.allclose(d({"x": same}), torch.full((3,), -2 / 3), atol=1e-5)
    assert d({"x": diff}).mean() > d({"x": same}).mean()


def test_regularizers(acts):
    flat = {INPUT: torch.full((2, 3, 8, 8), 0.5)}
    noisy = {INPUT: torch.rand(2, 3, 8, 8)}
    for reg in (obj.l1(), obj.l2(), obj.total_variation(), obj.total_variation(beta=2),
                obj.blur()):
        assert reg.layers == {INPUT}
        assert reg(flat).abs().max() < 1e-3, reg.name
        assert (reg(noisy) > reg(flat)).all(), reg.name
    img = noisy[INPUT]
    torch.testing.assert_close(obj.l1()(noisy), (img - 0.5).abs().mean(dim=(1, 2, 3)))


def test_clipping_penalizes_only_values_near_the_rails():
    inside = {INPUT: torch.rand(2, 3, 8, 8) * 0.9 + 0.05}  # all in [0.05, 0.95]
    assert obj.clipping()(inside).abs().max() == 0
    img = torch.full((1, 3, 4, 4), 0.5)
    img[0, 0, 0, 0], img[0, 1, 2, 3] = 0.0, 0.99  # 0.05 and 0.04 past the margin
    torch.testing.assert_close(obj.clipping()({INPUT: img}), torch.tensor([0.09 / 48]))
    # its gradient pulls clipped values inwards and leaves the others alone
    img.requires_grad_(True)
    (-obj.clipping()({INPUT: img})).sum().backward()
    assert img.grad[0, 0, 0, 0] > 0 and img.grad[0, 1, 2, 3] < 0
    assert (img.grad != 0).sum() == 2
    with pytest.raises(ValueError, match=r"margin must be in \[0, 0.5\), got 0.5"):
        obj.clipping(0.5)


def test_clipping_keeps_a_render_off_the_rails(tiny):
    import featviz

    def rendered(objective):
        return featviz.render(tiny, objective, steps=64, size=32, seed=0, lr=0.1, transforms="none",
                              pace="careful", progress=False).images  # no guard of its own

    pushed = rendered(obj.l1())  # every value pushed away from grey: flat black and white
    held = rendered(obj.l1() - 100 * obj.clipping(0.05))
    assert featviz.metrics.saturated_share(pushed) > 0.4
    assert featviz.metrics.saturated_share(held) < 0.05
    assert obj.l1()({INPUT: held}) > 0.35  # still far from grey: only the rails are kept off


def test_blur_gradient_smooths():
    img = torch.rand(1, 3, 16, 16, requires_grad=True)
    (-obj.blur()({INPUT: img})).sum().backward()
    stepped = img.detach() + 5 * img.grad
    tv = obj.total_variation()
    assert tv({INPUT: stepped}) < tv({INPUT: img.detach()})


def test_channel_out_of_range_names_valid_range(acts):
    with pytest.raises(ChannelError, match=r"channel 6 .*'conv'.*6 channels \(valid: 0-5\)"):
        obj.channel("conv", 6)(acts)
    with pytest.raises(ChannelError, match=r"valid: 0-5"):
        obj.channel("conv", [0, 9])(acts)
    with pytest.raises(ChannelError, match=r"valid: x 0-6, y 0-4"):
        obj.neuron("conv", 0, x=7, y=0)(acts)
    with pytest.raises(ChannelError, match=r"class 10 .*valid: 0-9"):
        obj.logit(10)(acts)
    with pytest.raises(FeatvizError, match="batch has 4 images"):
        obj.channel("conv", 0, batch=4)(acts)


@pytest.mark.parametrize("spec, expected", [
    ("channel:features.14:12", "channel(features.14, 12)"),
    ("neuron:mixed4a:3", "neuron(mixed4a, 3)"),
    ("neuron:mixed4a:3:5:6", "neuron(mixed4a, 3, x=5, y=6)"),
    ("layer:features.7", "layer(features.7)"),
    ("logit:207", "logit(207)"),
    ("softmax:207", "softmax(207)"),
    ("channel:a:1+0.5*channel:b:2", "(channel(a, 1) + (0.5 * channel(b, 2)))"),
    ("channel:a:0-3", "channel(a, [0..3])"),
])
def test_parse(spec, expected):
    assert obj.parse(spec).name == expected



def test_cosine_weighted_direction_matches_lucids_rule(acts):
    a, v = acts["conv"], torch.randn(6)
    dot = torch.einsum("bchw,c->bhw", a, v)
    cos = dot / (a.norm(dim=1) + 1e-4) / (v.norm() + 1e-4)
    expected = (dot * cos.clamp(min=0.1) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(obj.direction("conv", v, cossim_pow=2)(acts), expected)
    # a vector along an image's own activation scores higher than a same-length one across it
    own = a[0, :, 2, 3]
    other = torch.randn(6)
    other = other / other.norm() * own.norm()
    at = obj.direction_neuron("conv", own, x=3, y=2, cossim_pow=1)(acts)[0]
    assert at > obj.direction_neuron("conv", other, x=3, y=2, cossim_pow=1)(acts)[0]


def test_one_direction_per_image(acts):
    vecs = torch.randn(4, 6)
    both = obj.direction("conv", vecs, cossim_pow=1)
    assert both.batch_size == 4 and both.label(2) == "direction(conv, #2)"
    for i in range(4):
        alone = obj.direction("conv", vecs[i], cossim_pow=1)(acts)[i]
        torch.testing.assert_close(both(acts)[i], alone)
    centre = obj.direction_neuron("conv", vecs)(acts)
    torch.testing.assert_close(centre, torch.einsum("bc,bc->b", acts["conv"][:, :, 2, 3], vecs))
    with pytest.raises(FeatvizError, match="3 direction vectors need a batch of 3"):
        obj.direction("conv", torch.randn(3, 6))(acts)
    with pytest.raises(ChannelError, match=r"position x=9, y=0 is outside .* x 0-6, y 0-4"):
        obj.direction_neuron("conv", vecs, x=9, y=0)(acts)
    with pytest.raises(ValueError, match="or batch=, not both"):
        obj.direction("conv", vecs, batch=1)

def test_parse_direction(tmp_path, acts):
    v = torch.randn(6)
    torch.save(v, tmp_path / "v.pt")
    o = obj.parse(f"direction:conv:{tmp_path / 'v.pt'}")
    torch.testing.assert_close(o(acts), obj.direction("conv", v)(acts))


@pytest.mark.parametrize("spec", ["", "channel:x", "channel:x:y", "neuron:x:1:2",
                                  "chanel:x:1", "logit:cat", "channel:x:5-2", "layer"])
def test_parse_errors_show_grammar(spec):
    with pytest.raises(ObjectiveSyntaxError) as err:
        obj.parse(spec)
    assert "channel:LAYER:C" in str(err.value) and repr(spec) in str(err.value)


def test_expand_ranges():
    assert obj.expand("channel:l:0-2,5") == ["channel:l:0", "channel:l:1", "channel:l:2",
                                             "channel:l:5"]
    assert obj.expand("logit:3") == ["logit:3"]
    assert obj.parse_channels("1,5,9") == [1, 5, 9]


def _same(a: obj.Objective, b: obj.Objective, acts) -> None:
    assert a.layers == b.layers
    torch.testing.assert_close(a(acts), b(acts))


@pytest.mark.parametrize("spec", ["channel:conv:1-0.5*channel:conv:2",
                                  "channel:conv:1+-0.5*channel:conv:2",
                                  "channel:conv:1 - 0.5 * channel:conv:2",
                                  "channel:conv:1 + - .5*channel:conv:2",
                                  "-0.5*channel:conv:2 + channel:conv:1",
                                  "channel:conv:1-5e-1*channel:conv:2"])
def test_parse_minus_between_terms(spec, acts):
    a, b = obj.channel("conv", 1), obj.channel("conv", 2)
    _same(obj.parse(spec), a - 0.5 * b, acts)


def test_parse_minus_keeps_ranges_and_reads_back(acts):
    assert obj.parse("channel:conv:0-3").name == "channel(conv, [0..3])"
    o = obj.parse("channel:conv:0-3 - 2*channel:conv:1-2")  # a range on both sides of the '-'
    assert o.batch_size == 4 and o.name == "(channel(conv, [0..3]) - (2 * channel(conv, [1, 2])))"
    _same(obj.parse("logit:3-softmax:4-channel:vec:1"),
          obj.logit(3) - obj.softmax(4) - obj.channel("vec", 1), acts)
    _same(obj.parse("-layer:conv"), -obj.layer("conv"), acts)


def test_parse_kinds_in_any_case_and_spaces_ignored(acts):
    spaced = obj.parse("  Channel : conv : 1 - 0.5 * NEURON:conv : 2 : 3 : 4 +LOGIT: 7 ")
    _same(spaced, obj.channel("conv", 1) - 0.5 * obj.neuron("conv", 2, 3, 4) + obj.logit(7),
          acts)
    assert spaced.layers == {"conv", OUTPUT}  # no space left inside the layer name


def test_layer_names_may_hold_a_minus(acts):
    dashed = {"block-1": acts["conv"], "block-2": acts["vec"]}
    o = obj.parse("channel:block-1:3-channel:block-2:4")
    assert o.layers == {"block-1", "block-2"}
    _same(o, obj.channel("block-1", 3) - obj.channel("block-2", 4), dashed)
    assert obj.parse("layer:block-1").layers == {"block-1"}


@pytest.mark.parametrize("spec, term, right", [
    ("channel:L:12-0.5*chanel:L:20", "0.5*chanel:L:20", "did you mean 'channel'?"),
    ("channel:a:1 + Neuron:b", "Neuron:b", "neuron takes LAYER:C or LAYER:C:X:Y, e.g. "
                                           "'neuron:b:12:3:3'"),
    ("channel:a:1 - channel:b", "channel:b", "channel takes LAYER:C, e.g. 'channel:b:12'"),
    ("logit:3 + neuron:c:x", "neuron:c:x", "C must be a whole number, got 'x'"),
    ("layer:a - channel:b:5-2", "channel:b:5-2", "range '5-2' runs backwards (write 2-5)"),
    ("layer:a + channel:b:1;2", "channel:b:1;2", "a range (0-63) or a list (1,5,9)"),
    ("logit:1 - 0.5channel:a:1", "0.5channel:a:1", "a weight is written WEIGHT*KIND:"),
    ("channel:L:12 -0.5 channel:L:20", "0.5 channel:L:20", "a weight is written WEIGHT*KIND:"),
    ("channel:L:12 0.5*channel:L:20", "channel:L:12 0.5*channel:L:20",
     "join them with '+' or '-'"),
    ("channel:a:1 +", "channel:a:1 +", "ends with '+', which needs a term after it"),
])
def test_parse_errors_name_the_term_and_the_right_form(spec, term, right):
    with pytest.raises(ObjectiveSyntaxError) as err:
        obj.parse(spec)
    first = str(err.value).splitlines()[0]
    assert repr(spec) in first and repr(term) in first or term == spec
    assert right in first
    assert "channel:LAYER:C" in str(err.value)  # and the grammar below


def test_expand_reads_like_parse():
    assert obj.expand(" Channel : l : 0-2 ") == ["channel:l:0", "channel:l:1", "channel:l:2"]
    assert obj.expand("channel:l:0-2 - logit:1") == ["channel:l:0-2 - logit:1"]
    assert obj.expand("-channel:l:0-2") == ["-channel:l:0-2"]


def test_direction_reads_npy_and_pt_by_content(tmp_path, acts):
    import numpy as np

    v = torch.randn(6)
    np.save(tmp_path / "v.npy", v.numpy())
    torch.save(v[None], tmp_path / "row.pt")  # a [1, C] row is one vector too
    (tmp_path / "v.npy").rename(tmp_path / "v-npy.pt")  # the content decides, not the suffix
    for name in ("v-npy.pt", "row.pt"):
        _same(obj.parse(f"direction:conv:{tmp_path / name}"), obj.direction("conv", v), acts)


@pytest.mark.parametrize("content, said", [
    ("0.1 0.2 0.3\n", "it is a text file (it starts '0.1 0.2 0.3')"),
    (b"", "it is empty"),
    (b"\x80\x02\xff\x00garbage", "neither a torch.save nor a numpy.save file"),
    ({"w": torch.ones(6)}, "holds a dict, not a tensor"),
    (torch.ones(2, 3), "holds a torch.float32 tensor of shape [2, 3]"),
    (torch.tensor([1.0, float("nan")]), "NaN or infinite"),
])
def test_direction_file_errors_name_the_file_and_the_content_expected(tmp_path, content, said):
    path = tmp_path / "vec.pt"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(FeatvizError) as err:
        obj.parse(f"direction:conv:{path}")
    msg = str(err.value)
    assert str(path) in msg and said in msg
    if "NaN" not in said:
        assert "1-D tensor of one weight per channel, saved with torch.save" in msg
    assert "pickl" not in msg.lower() and "Unsupported operand" not in msg


def test_direction_file_missing_names_its_path(tmp_path):
    with pytest.raises(FeatvizError, match=r"direction vector file not found: .*nope\.pt"):
        obj.parse(f"direction:conv:{tmp_path / 'nope.pt'}")
    with pytest.raises(FeatvizError, match="is a folder"):
        obj.parse(f"direction:conv:{tmp_path}")


def test_class_token_is_in_the_grammar():
    o = obj.parse("Class_Token : encoder.layers.encoder_layer_1 : 5")
    assert set(o.layers) == {"encoder.layers.encoder_layer_1"} and "class_token" in o.name
    with pytest.raises(ObjectiveSyntaxError, match="class_token takes LAYER:C"):
        obj.parse("class_token:encoder.layers.encoder_layer_1")


def test_a_channel_range_past_any_layer_is_refused_before_it_is_built():
    with pytest.raises(ObjectiveSyntaxError, match="'0-9999999999' names more than 1048576"):
        obj.expand("channel:conv1:0-9999999999")
    assert len(obj.parse_channels("0-1023,2000")) == 1025
