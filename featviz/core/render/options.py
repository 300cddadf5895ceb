"""Every option of a render, declared once.

One :class:`Option` per setting holds its name, group, default, meaning, check, whether a
parameterization may declare it, and how the command line spells it. From these declarations
come ``render``'s grouped keywords (:func:`gather`), the rule "the caller's value, else the
parameterization's, else the library's" (:func:`resolve`), the checks, the ``featviz render`` and
``featviz sweep`` flags (``featviz.face.options``) and the options part of ``render``'s help.
Adding an option is one declaration here, its use in the loop, and a test.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import FeatvizError, closest, non_negative
from ..param.base import Parameterization
from ..transforms import PRESETS
from ..truncate import COMPILE_MODES
from .averaging import check_decay
from .convergence import parse as _parse_stop
from .forward import compile_mode
from .interrupt import Interrupt
from .schedule import SCHEDULES

#: The groups, in the order help lists them. ``basic`` options are ``render``'s own keywords;
#: the others may also be given as a group (``course={"ema": 0.95}``) or by name.
GROUPS = {
    "basic": "what every render sets",
    "course": "how the optimizer moves the images",
    "robustness": "what the images must survive",
    "speed": "how the model runs; the images stay the same up to float rounding",
    "output": "what the render reports and keeps",
}


@dataclass(frozen=True)
class Flag:
    """How the command line spells an option.

    ``name``: the flag (``"--adam-floor"``); ``type``: the name of an argument type in
    ``featviz.face.arguments`` (the command line's checks and messages), None for a switch;
    ``const``: the value a switch (or a flag given without a value, with ``optional``) stores;
    ``default``: the command line's default where it differs from Python's; ``choices``,
    ``metavar`` as argparse takes them; ``switch``: another flag, a switch that stores
    ``switch_value`` instead (the two exclude each other), with ``switch_help``; ``help``: the
    flag's own wording where a switch says the option differently.
    """

    name: str
    type: str | None = None
    const: Any = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    optional: bool = False
    switch: str | None = None
    switch_value: Any = None
    switch_help: str = ""
    help: str = ""  # the flag's own wording, where a switch says the option differently


@dataclass(frozen=True)
class Option:
    """One render option: ``name``, ``group`` (a key of :data:`GROUPS`), ``default``, ``help``
    (one sentence for both ``render``'s docs and the command line), ``check`` (the value
    checked and normalized, or an error naming it; None: taken as given), ``declared``
    (a :class:`~featviz.param.Parameterization` declares it as an attribute of the same name,
    used when the caller gives None or ``"auto"``) and ``flag`` (None: Python only)."""

    name: str
    group: str
    default: Any
    help: str
    check: Callable[[Any], Any] | None = None
    declared: bool = False
    flag: Flag | None = None
    auto: Any = field(default=None)  # the value that means "the parameterization's"


#: the paces ``render(pace=)`` takes; "auto" picks one (see :func:`resolve`)
PACES = ("auto", "fast", "careful")
#: the fast course: what ``pace="fast"`` sets where neither the caller, the parameterization
#: nor the model says otherwise. Measured on InceptionV1 channels against lucent's 512 steps
#: (docs/benchmarks.md, "Time to a good picture"): Adam at 0.1 climbs twice as fast as lucid's
#: 0.05; the average of the parameters (ema) cancels the step-to-step jitter 0.1 brings; the
#: floor on Adam's denominator keeps grid frequencies and grain from drifting; the rail guard
#: keeps the larger steps off the colour rails
FAST = {"lr": 0.1, "ema": 0.95, "adam_floor": 1.0, "rail_guard": 2.0}


def _pace(value: Any) -> str:
    if value not in PACES:
        near = closest(str(value), PACES)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise FeatvizError(f"pace must be one of {', '.join(map(repr, PACES))}, got "
                           f"{value!r}{hint}")
    return value


def _steps(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeatvizError(f"steps must be a whole number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"steps must be >= 0, got {value}")
    return value


def _memory_format(value: Any) -> str:
    if value not in ("contiguous", "channels_last"):
        raise ValueError(f"memory_format must be 'contiguous' or 'channels_last', "
                         f"got {value!r}")
    return value


def _floor(value: Any) -> float:
    return non_negative("adam_floor", value, "a multiple of each image's mean Adam "
                        "denominator, e.g. 0.5; 0 or None: plain Adam")


def _guard(value: Any) -> float:
    return non_negative("rail_guard", value, "a multiple of the objective's mean pull on a "
                        "colour value, e.g. 2; 0: none")


def _compile(value: Any) -> bool | str:
    compile_mode(value)  # an unknown mode fails here
    return value


def _stop_at(value: Any) -> Any:
    _parse_stop(value)
    return value


def _interrupt(value: Any) -> str:
    Interrupt(value)  # its own check and message
    return value


def _whole(name: str, low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FeatvizError(f"{name} must be a whole number >= {low}, got {value!r}")
        return value
    return check


OPTIONS: tuple[Option, ...] = (
    # basic: render's own keywords
    Option("steps", "basic", 512, "optimization steps", _steps,
           flag=Flag("--steps", "steps")),
    Option("size", "basic", None, "image size in pixels: one side, or (height, width) (on the "
           "command line HxW, e.g. 224x320); default: the model's input size",
           flag=Flag("--size", "size")),
    Option("batch", "basic", None, "images optimized together; default: what the objective "
           "drives", flag=Flag("--batch-size", "positive", default=16)),
    Option("seed", "basic", None, "image i draws from seed + i alone, so batching never "
           "changes an image; None: a fresh draw", flag=Flag("--seed", "seed", default=0)),
    Option("lr", "basic", None, "Adam's learning rate", declared=True,
           flag=Flag("--lr", "positive_float")),
    # course
    Option("pace", "course", "auto", "the course as a whole: 'fast' (Adam 0.1, an average "
           "of the parameters with decay 0.95, Adam's denominator floored at its mean, rail "
           "guard 2), 'careful' (lucid's: the parameterization's own rate, none of these), "
           "'auto': what the objective or the model declares, else fast for the image the "
           "fast course was measured on (Fourier) and careful for others; the options below "
           "override it one by one", _pace, flag=Flag("--pace", choices=PACES)),
    Option("optimizer", "course", None, "a function of the parameters that builds another "
           "optimizer than Adam"),
    Option("lr_schedule", "course", None, "the learning rate over the steps: 'constant', "
           "'cosine' (down to 5% of lr at the last step) or a function of the fraction done",
           declared=True, flag=Flag("--lr-schedule", choices=SCHEDULES)),
    Option("ema", "course", None, "show a moving average of the parameters with this decay "
           "in [0, 1), e.g. 0.95: it cancels the optimizer's step-to-step jitter; 0: the last "
           "step's", check_decay, declared=True, flag=Flag("--ema", "float", metavar="DECAY")),
    Option("adam_floor", "course", None, "floor Adam's denominator at this multiple of its "
           "mean over each image: coefficients the model barely responds to (grid frequencies, "
           "grain) move in proportion to their gradient; 0: plain Adam", _floor, declared=True,
           flag=Flag("--adam-floor", "non_negative_float", metavar="K")),
    Option("redirect_relu", "course", 16, "the first steps use lucid's redirected ReLU "
           "gradient, so units dead for the starting noise get a signal",
           _whole("redirect_relu", 0)),
    Option("stop_at", "course", None, "stop before the last step once the objective under "
           "fixed held-out transforms stops rising ('converged', checked every 32 steps) or "
           "reaches a number for every image", _stop_at,
           flag=Flag("--stop-at", "finite_float", metavar="VALUE", switch="--until-converged",
                     switch_value="converged", switch_help="stop before --steps once the "
                     "objective under fixed held-out transforms stops rising (checked every "
                     "32 steps)")),
    # robustness
    Option("transforms", "robustness", "auto", "the random transforms each step sees: "
           "'standard', 'distill', 'none', a list or a callable; 'auto': the "
           "parameterization's preset", declared=True, auto="auto",
           flag=Flag("--transforms", choices=("auto", *PRESETS))),
    Option("rail_guard", "robustness", None, "push colour values within 0.05 of 0 or 1 back "
           "inside with this multiple of the objective's mean pull on a value, e.g. 2; 0: none",
           _guard, declared=True,
           flag=Flag("--rail-guard", "non_negative_float", metavar="K")),
    Option("views", "robustness", 1, "transformed copies of each image per step, their "
           "objectives averaged (Ghiasi et al. 2022's augmentation ensembling): a steadier "
           "gradient for about views x the step's time and memory", _whole("views", 1),
           flag=Flag("--views", "positive", metavar="K")),
    Option("polish", "robustness", 0, "run the last N steps without transforms, so the image "
           "shown is the one optimized last (stronger as shown, slightly less robust), e.g. 32",
           flag=Flag("--polish", "index", metavar="N")),
    # speed
    Option("amp", "speed", False, "bf16 autocast (CUDA and CPU)", flag=Flag("--amp", const=True)),
    Option("memory_format", "speed", "contiguous", "'channels_last' runs the model in NHWC "
           "order (often faster)", _memory_format,
           flag=Flag("--channels-last", const="channels_last", help="run the model in "
                     "channels-last (NHWC) memory order (often faster)")),
    Option("compile", "speed", False, "torch.compile the model cut after the deepest layer "
           "(True or a mode; pays on GPUs over many steps)", _compile,
           flag=Flag("--compile", const="default", optional=True, choices=COMPILE_MODES)),
    Option("stop_early", "speed", True, "run the model only up to the deepest layer the "
           "objective reads"),
    # output
    Option("thresholds", "output", (), "steps at which to keep snapshots",
           flag=Flag("--thresholds", "step_list", default=[])),
    Option("record_every", "output", 16, "record the objective every this many steps",
           _whole("record_every", 1)),
    Option("progress", "output", True, "show a progress bar",
           flag=Flag("--no-progress", const=False, help="do not show a progress bar")),
    Option("saliency", "output", None, "accumulate the saliency map |dL/dx| "
           "(result.saliency)", declared=True),
    Option("interrupt", "output", "auto", "at a Ctrl-C: 'auto' keeps what was made in an "
           "interactive session, 'return' always, 'raise' never", _interrupt),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def in_group(group: str) -> list[Option]:
    """The options of ``group`` (a key of :data:`GROUPS`), in declaration order.

    Args:
        group: ``"basic"``, ``"course"``, ``"robustness"``, ``"speed"`` or ``"output"``.
    """
    if group not in GROUPS:
        raise FeatvizError(f"no option group {group!r}; the groups are {', '.join(GROUPS)}")
    return [o for o in OPTIONS if o.group == group]


def defaults() -> dict[str, Any]:
    """Every option's library default, by name."""
    return {o.name: o.default for o in OPTIONS}


def _unknown(name: str, where: str) -> TypeError:
    near = closest(name, BY_NAME)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return TypeError(f"{where} got an unknown option {name!r}{hint} (the options: "
                     f"{', '.join(BY_NAME)})")


def gather(given: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any] | None],
           where: str = "render()") -> dict[str, Any]:
    """The options a caller gave, by name: ``given`` (keywords, each an option's name) merged
    with ``groups`` (group name -> a mapping of that group's options, or None).

    Args:
        given: options given by name.
        groups: options given as groups, e.g. ``{"course": {"ema": 0.95}}``.
        where: the caller's name for error messages.
    """
    chosen: dict[str, Any] = {}
    for name, value in given.items():
        if name not in BY_NAME:
            raise _unknown(name, where)
        chosen[name] = value
    for group, values in groups.items():
        for name, value in (values or {}).items():
            option = BY_NAME.get(name)
            if option is None or option.group != group:
                owner = f" (it belongs to {option.group}=)" if option else ""
                raise FeatvizError(f"{group}= has no option {name!r}{owner}; {group} holds "
                                   f"{', '.join(o.name for o in in_group(group))}")
            if name in chosen:
                raise FeatvizError(f"{name} is given twice: by name and in {group}=")
            chosen[name] = value
    return chosen


class Settings(Mapping[str, Any]):
    """Every option's value for one render, resolved and checked; read as attributes
    (``settings.ema``) or as a mapping."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != BY_NAME[k].default}
        return f"Settings({changed})"


def resolve(chosen: Mapping[str, Any], declaring: Any,
            model: Mapping[str, Any] | None = None, objective_pace: str | None = None
            ) -> Settings:
    """Each option's value: the caller's (``chosen``); else what the parameterization
    (``declaring``) declares for a declared option where it departs from the base class's
    (a CPPN's ``transforms="none"``); else what the model declares (``model``, e.g. the
    transformer course of :func:`featviz.models.load("vit_tiny")`); else what the pace
    sets (:data:`FAST` for ``"fast"``); else the parameterization's base value for a declared
    option, or the library default. Each checked. The pace itself: the caller's, else the
    objective's (``objective_pace``), else the model's, else :func:`auto_pace`.

    Args:
        chosen: the options the caller gave, by name (see :func:`gather`).
        declaring: the object whose attributes hold the declared options' values (the
            parameterization, or the :class:`~featviz.param.Parameterization` class for a
            module that declares nothing).
        model: the options the model declares, by name (its ``featviz_render``).
        objective_pace: the pace the objective declares (its ``pace``), or None.
    """
    model = model or {}
    pace = _pace(chosen.get("pace") or "auto")
    if pace == "auto":
        pace = objective_pace or model.get("pace") or auto_pace(declaring)
    paced = FAST if pace == "fast" else {}
    values = {"pace": pace}
    for option in OPTIONS:
        if option.name == "pace":
            continue
        value = chosen.get(option.name, option.default)
        if option.declared and _means_auto(value, option.auto):
            value = _declared_value(option.name, declaring, model, paced)
        elif option.name not in chosen:
            value = model.get(option.name, paced.get(option.name, value))
        if option.check is not None and value is not None:
            value = option.check(value)
        values[option.name] = value
    return Settings(values)


def _declared_value(name: str, declaring: Any, model: Mapping[str, Any],
                    paced: Mapping[str, Any]) -> Any:
    """A declared option the caller left to others: the parameterization's where it departs
    from the base class's, else the model's, else the pace's, else the base value."""
    own = getattr(declaring, name)
    if _departs(declaring, name):
        return own
    return model.get(name, paced.get(name, own))


def _departs(declaring: Any, name: str) -> bool:
    """Whether ``declaring``'s value of option ``name`` differs from the base class's
    (compared by identity, or by value for plain numbers and words only)."""
    own, base = getattr(declaring, name), getattr(Parameterization, name)
    return not (own is base or (isinstance(own, (str, int, float, bool)) and own == base))


def auto_pace(declaring: Any) -> str:
    """The pace where neither the caller, the objective nor the model names one: fast for a
    parameterization that declares ``fast_course`` (the Fourier image, on which it was
    measured) and keeps the base course otherwise, careful for any other (a CPPN, MACO, a
    pixel image: their own courses, not measured with the fast one).

    Args:
        declaring: the parameterization, or the class standing in for a module that
            declares nothing.
    """
    course = ("lr", "lr_schedule", "ema", "adam_floor", "rail_guard")
    own_course = any(_departs(declaring, n) for n in course)
    return "fast" if getattr(declaring, "fast_course", False) and not own_course else "careful"


def check_declared(declared: Mapping[str, Any], who: str) -> dict[str, Any]:
    """The render options a model declares, each a known option with a valid value (checked
    as a caller's are: :func:`gather`, then :func:`check_given`).

    Args:
        declared: option name -> value.
        who: the model's name, for the error.
    """
    checked = gather(declared, {}, where=f"the render options {who} declares")
    check_given(checked)
    return checked


def _means_auto(value: Any, auto: Any) -> bool:
    """Whether ``value`` asks for the parameterization's value (None, or a word like "auto"):
    compared by identity or as a string, never with ``==`` on a tensor or a callable."""
    return value is None if auto is None else isinstance(value, str) and value == auto


def check_given(chosen: Mapping[str, Any]) -> None:
    """Check the options the caller gave, before anything is built (a typo fails first).

    Args:
        chosen: the options the caller gave, by name.
    """
    for name, value in chosen.items():
        option = BY_NAME[name]
        if option.check is not None and value is not None \
                and not (option.declared and _means_auto(value, option.auto)):
            option.check(value)


def help_text() -> str:
    """The options part of ``render``'s documentation, made from the declarations: one line
    per option under its group's heading."""
    lines = []
    for group, meaning in GROUPS.items():
        lines.append(f"{group}: {meaning}.")
        for o in in_group(group):
            default = "the parameterization's" if o.declared else repr(o.default)
            lines += textwrap.wrap(f"{o.name}: {o.help} (default: {default}).", 92,
                                   initial_indent="    ", subsequent_indent="        ")
    return "\n".join(lines)
