"""Render options are declared once: render's keywords, the groups, the rule "caller, else
parameterization, else model, else library", the checks and the command-line flags all come from
featviz.core.render.options and cannot drift apart."""

from __future__ import annotations

import argparse
import inspect

import pytest
import torch
from torch import nn

import featviz
from featviz.core.render import options, prepare
from featviz.core.render.options import BY_NAME, GROUPS, OPTIONS, gather, resolve
from featviz.errors import FeatvizError
from featviz.param import Parameterization


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()


def test_renders_keywords_are_the_basic_options_and_the_groups():
    signature = inspect.signature(featviz.render).parameters
    keywords = [n for n, p in signature.items() if p.kind is p.KEYWORD_ONLY]
    basic = [o.name for o in OPTIONS if o.group == "basic"]
    assert keywords == basic + [g for g in GROUPS if g != "basic"]
    for name in basic:
        assert signature[name].default == BY_NAME[name].default, name
    # every option is documented in render's help, made from the declarations
    for option in OPTIONS:
        assert f"{option.name}:" in featviz.render.__doc__


def test_an_option_by_name_or_in_its_group_is_the_same():
    assert gather({"ema": 0.9}, {}) == gather({}, {"course": {"ema": 0.9}}) == {"ema": 0.9}


def test_a_misspelt_or_misplaced_option_is_named():
    with pytest.raises(TypeError, match="unknown option 'emma'; did you mean 'ema'"):
        gather({"emma": 0.9}, {})
    with pytest.raises(FeatvizError, match=r"speed= has no option 'ema' \(it belongs to "
                                           r"course=\)"):
        gather({}, {"speed": {"ema": 0.9}})
    with pytest.raises(FeatvizError, match="ema is given twice"):
        gather({"ema": 0.9}, {"course": {"ema": 0.5}})
    with pytest.raises(TypeError, match="did you mean 'polish'"):
        featviz.render(_tiny(), "channel:2:0", steps=1, progress=False, polsh=3)


class _Declaring(Parameterization):
    """Declares its own course, as MACO or the CPPN do."""

    lr = 0.2
    ema = 0.9
    rail_guard = 1.5
    transforms = "none"

    def __init__(self):
        super().__init__(1, (24, 24), seeds=[0])
        self.x = nn.Parameter(torch.rand(1, 3, 24, 24))

    def forward(self):
        return self.x.clamp(0, 1)


def test_caller_beats_parameterization_beats_library():
    declared = resolve({}, _Declaring)
    assert (declared.lr, declared.ema, declared.rail_guard, declared.transforms) == \
        (0.2, 0.9, 1.5, "none")
    assert declared.polish == 0 and declared.redirect_relu == 16  # library defaults
    given = resolve({"lr": 0.01, "ema": 0, "transforms": "standard"}, _Declaring)
    assert (given.lr, given.ema, given.transforms) == (0.01, 0.0, "standard")
    plain = resolve({}, Parameterization)
    assert (plain.lr, plain.ema, plain.transforms) == (0.05, 0.0, "standard")


def test_prepare_uses_the_parameterizations_course():
    plan = prepare(_tiny(), "channel:2:0", _Declaring(), {"steps": 4})
    assert plan.lr == 0.2 and plan.average is not None and plan.average.decay == 0.9
    assert plan.settings.transforms == "none"
    plan = prepare(_tiny(), "channel:2:0", _Declaring(), {"steps": 4, "ema": 0})
    assert plan.average is None


def test_a_model_declares_its_course_between_the_parameterizations_and_the_library():
    model = featviz.models.wrap(_tiny(), render={"transforms": "distill", "ema": 0.5,
                                                 "polish": 2})
    plan = prepare(model, "channel:2:0", None, {"steps": 4})
    assert (plan.settings.transforms, plan.settings.ema, plan.settings.polish) == \
        ("distill", 0.5, 2)
    # the caller's choice beats the model's
    plan = prepare(model, "channel:2:0", None, {"steps": 4, "transforms": "none", "polish": 0})
    assert (plan.settings.transforms, plan.settings.polish) == ("none", 0)
    # a parameterization that departs from the base class keeps its own (the CPPN needs no
    # transforms), where it declares nothing the model's course applies
    plan = prepare(model, "channel:2:0", _Declaring(), {"steps": 4})
    assert (plan.settings.transforms, plan.settings.ema, plan.settings.polish) == \
        ("none", 0.9, 2)
    # without a declaration, the library's
    assert prepare(_tiny(), "channel:2:0", None, {"steps": 4}).settings.transforms == "standard"


def test_a_model_declaring_an_unknown_or_bad_option_is_told_which():
    with pytest.raises(TypeError, match="unknown option 'emma'; did you mean 'ema'"):
        featviz.models.wrap(_tiny(), render={"emma": 0.5})
    with pytest.raises(FeatvizError, match="ema"):
        featviz.models.wrap(_tiny(), render={"ema": 2})


def test_a_bad_value_fails_before_anything_is_built():
    with pytest.raises(FeatvizError, match="adam_floor must be a number >= 0"):
        prepare(_tiny(), "channel:2:0", None, {"adam_floor": -1})
    with pytest.raises(ValueError, match="memory_format must be"):
        featviz.render(_tiny(), "channel:2:0", speed={"memory_format": "nhwc"})


def test_param_may_be_a_kinds_name():
    plan = prepare(_tiny(), "channel:2:0", "pixel", {"size": 32, "seed": 3})
    with torch.no_grad():
        assert torch.equal(plan.param(), featviz.param.make("pixel", 32, 1, seed=[3])())
        assert not torch.equal(plan.param(), featviz.param.make("fourier", 32, 1, seed=[3])())
    result = featviz.render(_tiny(), "channel:2:0", "pixel", steps=2, size=32, seed=3,
                            output={"progress": False})
    assert result.images.shape == (1, 3, 32, 32)


def test_grouped_options_render_as_named_ones():
    kw = {"steps": 6, "size": 32, "seed": 1, "progress": False}
    a = featviz.render(_tiny(), "channel:2:1", **kw, ema=0.5, polish=2)
    b = featviz.render(_tiny(), "channel:2:1", **kw, course={"ema": 0.5},
                       robustness={"polish": 2})
    assert torch.equal(a.images, b.images)


def _flags(command: str) -> dict[str, argparse.Action]:
    from featviz.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions}


@pytest.mark.parametrize("command", ["render", "sweep"])
def test_every_flagged_option_is_a_flag_of_render_and_sweep(command):
    flags = _flags(command)
    for option in OPTIONS:
        # a sweep writes its own files and log: the output group is render's alone
        if option.flag is None or (command == "sweep" and option.group == "output"):
            continue
        assert option.name in flags, f"{command} lacks {option.flag.name}"
        assert option.flag.name in flags[option.name].option_strings or \
            option.flag.switch in flags[option.name].option_strings
        assert flags[option.name].help


def test_the_help_text_lists_each_group():
    text = options.help_text()
    for group in GROUPS:
        assert text.count(f"{group}: ") >= 1


def test_a_sweep_takes_renders_names_and_records_what_changes_images(tmp_path):
    import json

    from featviz import sweep

    kw = {"steps": 2, "size": 16, "transforms": "none", "log": lambda msg: None}
    sweep.sweep(_tiny(), tmp_path / "a", ["2"], "0-1", param="pixel", batch=2, ema=0.5,
                robustness={"polish": 1}, speed={"memory_format": "channels_last"}, **kw)
    record = json.loads((tmp_path / "a" / "manifest.rank0.jsonl").read_text().splitlines()[0])
    settings = record["settings"]
    assert settings["ema"] == 0.5 and settings["polish"] == 1 and settings["param"] == "pixel"
    assert "memory_format" not in settings and "adam_floor" not in settings
    assert record["batch"] == 2
    with pytest.warns(DeprecationWarning, match=r"sweep\(batch_size=...\) is now sweep\(batch"):
        sweep.sweep(_tiny(), tmp_path / "b", ["2"], "0", batch_size=1, **kw)
    with pytest.raises(FeatvizError, match="sweep sets progress of each render itself"):
        sweep.sweep(_tiny(), tmp_path / "c", ["2"], "0", progress=True, **kw)
    with pytest.raises(TypeError, match="did you mean 'ema'"):
        sweep.sweep(_tiny(), tmp_path / "d", ["2"], "0", emma=0.5, **kw)
