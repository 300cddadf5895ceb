"""render's pace: the fast course where it was measured as good (the Fourier image), the careful
one elsewhere, declared by an objective or a model, always overridden by the caller, one option
at a time or as a whole."""

from __future__ import annotations

import argparse

import pytest
import torch
from conftest import make_tiny

import featviz
from featviz import objectives as obj
from featviz.core.render import prepare
from featviz.core.render.options import FAST, resolve
from featviz.errors import FeatvizError
from featviz.face.options import add_flags, chosen
from featviz.param import Parameterization

CAREFUL = {"lr": 0.05, "ema": 0.0, "adam_floor": 0.0, "rail_guard": 0.0}


def _course(settings) -> dict:
    return {k: settings[k] for k in CAREFUL}


def _plan(objective=None, param=None, model=None, **options):
    model = model or make_tiny()
    return prepare(model, objective or obj.channel("conv3", 1), param,
                   {"steps": 2, "size": 24, **options})


def test_the_fourier_image_takes_the_fast_course_unasked():
    s = _plan().settings
    assert s.pace == "fast" and _course(s) == FAST


def test_careful_is_lucids_course():
    s = _plan(pace="careful").settings
    assert s.pace == "careful" and _course(s) == CAREFUL


@pytest.mark.parametrize("kind", ["pixel", "cppn", "maco"])
def test_other_parameterizations_keep_their_own_course(kind):
    s = _plan(param=kind).settings
    p = featviz.param.make(kind, 24)
    assert s.pace == "careful"
    assert s.lr == p.lr and s.ema == p.ema and s.adam_floor == p.adam_floor


def test_an_option_given_wins_over_the_pace():
    s = _plan(pace="fast", ema=0, lr=0.3).settings
    assert (s.lr, s.ema, s.adam_floor, s.rail_guard) == (0.3, 0.0, 1.0, 2.0)


def test_an_objective_may_declare_the_careful_course_and_a_sum_keeps_it():
    careful = obj.channel("conv3", 1)
    careful = obj.Objective(careful.fn, careful.layers, "careful one", pace="careful")
    assert _plan(careful).settings.pace == "careful"
    summed = careful + obj.channel("conv3", 5) - 0.1 * obj.channel("conv3", 2)
    assert summed.pace == "careful" and _plan(summed).settings.pace == "careful"
    assert _plan(obj.channel("conv3", 5).on(0) * 2).settings.pace == "fast"
    # the caller's word is the last
    assert _plan(careful, pace="fast").settings.pace == "fast"
    with pytest.raises(FeatvizError, match="pace is 'fast', 'careful' or None"):
        obj.Objective(careful.fn, careful.layers, pace="quick")


def test_a_model_may_declare_its_pace():
    model = featviz.models.wrap(make_tiny().net, input_size=32, render={"pace": "careful"})
    assert _plan(model=model).settings.pace == "careful"
    assert _plan(model=model, pace="fast").settings.pace == "fast"
    with pytest.raises(FeatvizError, match="did you mean 'careful'"):
        featviz.models.wrap(make_tiny().net, input_size=32, render={"pace": "carefull"})


def test_a_misspelt_pace_names_the_closest():
    with pytest.raises(FeatvizError, match="pace must be one of .*got 'fats'; did you mean 'fast'"):
        featviz.render(make_tiny(), "channel:conv3:1", steps=1, pace="fats", progress=False)


def test_resolve_without_a_parameterization_is_careful():
    assert resolve({}, Parameterization).pace == "careful"


def test_the_command_line_takes_the_pace():
    parser = argparse.ArgumentParser()
    add_flags(parser, ["pace", "ema"])
    assert chosen(parser.parse_args(["--pace", "careful"]), ["pace", "ema"])["pace"] == \
        "careful"
    with pytest.raises(SystemExit):
        parser.parse_args(["--pace", "slow"])


def test_the_fast_course_climbs_further_in_as_many_steps():
    model = make_tiny()
    o = obj.channel("conv3", 1)
    fast = featviz.render(model, o, steps=24, size=24, seed=3, progress=False)
    careful = featviz.render(model, o, steps=24, size=24, seed=3, pace="careful",
                             progress=False)
    assert fast.history[-1] > careful.history[-1] > careful.history[0]
    # and it is the course it names: the same as giving its options one by one
    spelled = featviz.render(model, o, steps=24, size=24, seed=3, pace="careful",
                             progress=False, **FAST)
    assert torch.equal(fast.images, spelled.images)


def test_torchvisions_mobilenet_v2_declares_the_careful_pace():
    # the fast course left MobileNetV2 a finer grain than lucent's (benchmarks page)
    mobile = featviz.models.load("mobilenet_v2", weights=None)
    assert mobile.featviz_render == {"pace": "careful"}
    assert _plan(obj.channel("features.14", 1), model=mobile).settings.pace == "careful"
    assert featviz.models.load("resnet18", weights=None).featviz_render == {}
