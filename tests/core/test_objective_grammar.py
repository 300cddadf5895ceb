"""The objective grammar's parts: terms() reads a string without building it, a kind is one
registration on its builder, and a builder's display name comes from its definition."""

from __future__ import annotations

import pytest
import torch

import featviz
from featviz import objectives as obj
from featviz.core.objectives import grammar
from featviz.errors import ObjectiveSyntaxError
from featviz.hooks import INPUT


@pytest.fixture
def acts():
    torch.manual_seed(0)
    return {"conv": torch.randn(4, 6, 5, 7), "block-1": torch.randn(4, 6, 5, 7),
            INPUT: torch.rand(4, 3, 8, 8)}


@pytest.fixture
def kinds():
    """The registry, restored in place after the test (callers hold the same dict)."""
    saved = dict(grammar.KINDS)
    yield grammar.KINDS
    grammar.KINDS.clear()
    grammar.KINDS.update(saved)


def test_the_short_name_is_the_package():
    assert featviz.objectives is featviz.core.objectives
    assert featviz.objectives.grammar is grammar


def test_terms_give_weight_kind_and_arguments():
    found = obj.terms(" Channel : mixed4a : 97 - 0.5 * NEURON:mixed4a:3:5:5 + logit:7")
    assert [(t.weight, t.kind, t.args) for t in found] == [
        (1.0, "channel", ("mixed4a", "97")),
        (-0.5, "neuron", ("mixed4a", "3", "5", "5")),
        (1.0, "logit", ("7",)),
    ]
    assert found[1].text == "0.5 * NEURON:mixed4a:3:5:5"
    assert [t.weight for t in obj.terms("-channel:a:1 - -2*channel:a:2")] == [-1.0, 2.0]


def test_terms_keep_a_layer_name_with_a_minus_and_a_path_with_a_colon():
    assert obj.terms("channel:block-1:3-channel:block-2:4")[0].args == ("block-1", "3")
    (t,) = obj.terms(r"direction:conv:C:\vectors\v.pt")
    assert t.args == ("conv", r"C:\vectors\v.pt")


def test_terms_build_nothing_but_check_kind_and_arity():
    # no file is read: the missing vector is the builder's business, not the grammar's
    assert obj.terms("direction:conv:/no/such/file.pt")[0].kind == "direction"
    for spec, said in [("chanel:a:1", "did you mean 'channel'?"),
                       ("channel:a", "channel takes LAYER:C, e.g. 'channel:a:12'"),
                       ("logit:3 +", "ends with '+'"), ("", "it is empty")]:
        with pytest.raises(ObjectiveSyntaxError) as by_terms:
            obj.terms(spec)
        with pytest.raises(ObjectiveSyntaxError) as by_parse:
            obj.parse(spec)
        assert said in str(by_terms.value) and str(by_terms.value) == str(by_parse.value)


def _plain_channel(spec: str) -> tuple[str, int] | None:
    """What the command line asks: is ``spec`` one channel:LAYER:C term of weight 1?"""
    (t, *more) = obj.terms(spec)
    if more or t.kind != "channel" or t.weight != 1 or not t.args[1].isdigit():
        return None
    return t.args[0], int(t.args[1])


@pytest.mark.parametrize("spec, plain", [
    ("channel:mixed4a:476", ("mixed4a", 476)),
    (" Channel : mixed4a : 476 ", ("mixed4a", 476)),
    ("channel:block-1:3", ("block-1", 3)),
    ("2*channel:mixed4a:476", None), ("-channel:mixed4a:476", None),
    ("channel:mixed4a:0-3", None), ("channel:a:1 + channel:a:2", None), ("neuron:a:1", None),
])
def test_terms_tell_a_plain_channel_without_splitting_by_hand(spec, plain):
    assert _plain_channel(spec) == plain


def test_a_term_reads_and_builds_its_arguments(acts):
    a, b = obj.terms("channel:conv:0-2 - 0.5*neuron:conv:3:1:2")
    assert a.read() == ["conv", [0, 1, 2]] and b.read() == ["conv", 3, 1, 2]
    assert b.build().name == obj.neuron("conv", 3, 1, 2).name
    with pytest.raises(ObjectiveSyntaxError, match="X and Y must be a whole number, got 'y'"):
        obj.terms("neuron:conv:3:1:y")[0].build()


@obj.builder()
def _double(layer: str, n: int, scale: float = 2.0, batch: int | None = None) -> obj.Objective:
    """A kind made up for the tests: ``scale`` times channel ``n``'s mean."""
    return obj.Objective(lambda acts: scale * acts[layer][:, n].mean(dim=(1, 2)), [layer])


def test_a_registered_kind_is_read_from_a_string(kinds, acts):
    grammar.register(grammar.LAYER, grammar.C, name="double", example="double:{layer}:3",
                     help="twice the mean of channel C")(_double)
    o = obj.parse("channel:conv:1 - 0.5*Double : block-1 : 4")
    assert o.name == "(channel(conv, 1) - (0.5 * _double(block-1, 4)))"  # named by definition
    assert o.layers == {"conv", "block-1"}  # the '-' in block-1 stayed in the layer name
    expected = acts["conv"][:, 1].mean(dim=(1, 2)) - acts["block-1"][:, 4].mean(dim=(1, 2))
    torch.testing.assert_close(o(acts), expected)
    assert "  double:LAYER:C            twice the mean of channel C" in obj.GRAMMAR
    with pytest.raises(ObjectiveSyntaxError) as err:
        obj.parse("double:conv")
    first = str(err.value).splitlines()[0]
    assert "double takes LAYER:C, e.g. 'double:conv:3'" in first
    assert "double:LAYER:C" in str(err.value)  # the grammar below lists the new kind
    with pytest.raises(ObjectiveSyntaxError, match=r"did you mean 'double'\? \(kinds: .*double"):
        obj.parse("doubel:conv:3")


def test_a_kind_with_optional_and_rest_arguments(kinds, tmp_path):
    @obj.builder()
    def scaled(layer: str, vector: str, weight: int | None = None) -> obj.Objective:
        return obj.Objective(lambda acts: acts[layer].mean(dim=(1, 2, 3)), [layer])

    tail = grammar.Arg("PATH", lambda t, text: text, rest=True)
    grammar.register(grammar.LAYER, tail, help="made up", example="scaled:{layer}:p")(scaled)
    assert grammar.KINDS["scaled"].arity == (2,) and grammar.KINDS["scaled"].layer_first
    assert obj.parse("scaled:conv:a:b").name == "scaled(conv, a:b)"
    grammar.register(grammar.C, grammar.X, optional=1, name="pair", help="made up",
                     example="pair:1:2")(scaled)
    assert grammar.KINDS["pair"].takes == "C or C:X" and grammar.KINDS["pair"].arity == (1, 2)
    assert "  pair:C[:X]" in obj.GRAMMAR


def test_registering_twice_or_a_bad_name_is_refused(kinds):
    with pytest.raises(ValueError, match="'channel' is already registered"):
        grammar.register(grammar.LAYER, help="", example="")(obj.channel)
    with pytest.raises(ValueError, match="must be a name"):
        grammar.register(grammar.LAYER, name="two words", help="", example="")(_double)


def test_display_names_follow_the_definition():
    assert _double("conv", 3).name == "_double(conv, 3)"
    assert _double("conv", 3, scale=1.5).name == "_double(conv, 3, scale=1.5)"
    assert _double("conv", 3, 2.0).name == "_double(conv, 3)"  # the default is left out
    on = _double("conv", 3, batch=2)
    assert on.name == "_double(conv, 3)@2" and on.targets == {2: "_double(conv, 3)"}
    assert on.batch_size == 3
    assert _double.display("conv", 5) == "_double(conv, 5)"
    assert _double.__name__ == "_double" and "made up for the tests" in _double.__doc__


@pytest.mark.parametrize("make, name", [
    (lambda: obj.channel("mixed4a", 476), "channel(mixed4a, 476)"),
    (lambda: obj.channel("l", torch.tensor(5)), "channel(l, 5)"),
    (lambda: obj.channel("l", [1, 5, 9]), "channel(l, [1, 5, 9])"),
    (lambda: obj.channel("l", range(64)), "channel(l, [0..63])"),
    (lambda: obj.neuron("l", 3), "neuron(l, 3)"),
    (lambda: obj.neuron("l", 3, 1, 2), "neuron(l, 3, x=1, y=2)"),
    (lambda: obj.neuron("l", 3, x=1), "neuron(l, 3, x=1, y=None)"),
    (lambda: obj.layer("l", batch=1), "layer(l)@1"),
    (lambda: obj.logit(7), "logit(7)"), (lambda: obj.softmax(7), "softmax(7)"),
    (lambda: obj.class_token("l", 2), "class_token(l, 2)"),
    (lambda: obj.direction("l", torch.ones(6)), "direction(l, 6-vector)"),
    (lambda: obj.direction("l", torch.ones(3, 6), cossim_pow=2),
     "direction(l, 3 6-vectors, cossim_pow=2)"),
    (lambda: obj.direction_neuron("l", [1, 0, 0], 2, 3, cossim_pow=1.5),
     "direction_neuron(l, 3-vector, x=2, y=3, cossim_pow=1.5)"),
    (lambda: obj.diversity("l"), "diversity(l)"),
    (lambda: obj.interpolate(obj.logit(1), obj.logit(2), 5), "interpolate(logit(1), logit(2))"),
    (lambda: obj.l1(), "l1(0.5)"), (lambda: obj.l2(0), "l2(0)"),
    (lambda: obj.clipping(), "clipping(0.05)"), (lambda: obj.blur(), "blur()"),
    (lambda: obj.blur(1.5), "blur(1.5)"), (lambda: obj.total_variation(), "total_variation()"),
    (lambda: obj.total_variation(beta=2), "tv(beta=2)"),
    (lambda: obj.neighbour_difference(), "neighbour_difference()"),
])
def test_every_builder_keeps_its_name(make, name):
    assert make().name == name


def test_labels_of_batched_builders_come_from_the_same_definition():
    assert obj.channel("l", [4, 7]).targets == {0: "channel(l, 4)", 1: "channel(l, 7)"}
    assert obj.direction("l", torch.ones(2, 6)).targets == {0: "direction(l, #0)",
                                                            1: "direction(l, #1)"}
def test_layer_colon_channel_is_short_for_a_channel():
    """lucid's and lucent's "mixed4a:476": a first piece that is no kind's name, then a
    channel spec, reads as channel:LAYER:C; kinds and malformed terms keep their errors."""
    from featviz.core.objectives import expand, parse, terms

    assert parse("mixed4a:476").name == parse("channel:mixed4a:476").name
    assert terms("layer3.0 : 2")[0][:3] == (1.0, "channel", ("layer3.0", "2"))
    assert expand("mixed4a:0-2") == [f"channel:mixed4a:{c}" for c in range(3)]
    mixed = parse("mixed4a:476 - 0.5*neuron:mixed4a:3")
    assert mixed.name == "(channel(mixed4a, 476) - (0.5 * neuron(mixed4a, 3)))"
    for bad, said in [("chanel:mixed4a:3", "did you mean 'channel'"),
                      ("mixed4a:x", "unknown objective kind 'mixed4a'"),
                      ("logit:3:4", "logit takes C")]:
        with pytest.raises(ObjectiveSyntaxError, match=said):
            parse(bad)
