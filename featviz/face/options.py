"""The render options' command-line flags, made from their one declaration.

``featviz render`` and ``featviz sweep`` call :func:`add_flags` with the names of the options
they take; each becomes the flag its :class:`~featviz.core.render.options.Flag` spells, with
the argument type of :mod:`featviz.face.arguments` it names (so its checks and messages are
the command line's), in an argparse group per option group. :func:`chosen` reads them back
as ``render``'s keyword arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..core.render.options import BY_NAME, GROUPS, Option
from . import arguments as _arguments

_BUILTIN_TYPES = {"float": float}


def _type(name: str | None):
    """The argparse type a declaration names: a function of :mod:`.arguments` or a builtin."""
    if name is None:
        return None
    return _BUILTIN_TYPES.get(name) or getattr(_arguments, name)


def _help(option: Option, default: Any) -> str:
    """The flag's help: the option's meaning and its default (argparse formats '%')."""
    if option.declared:
        said = "the parameterization's"
    elif option.flag.const is not None and not option.flag.optional:
        said = None  # a switch: off unless given
    else:
        said = "none" if default in (None, [], ()) else str(default)
    text = (option.flag.help or option.help) + (f" (default: {said})" if said else "")
    return text.replace("%", "%%")


def _add(group: argparse._ActionsContainer, option: Option, default: Any,
         kind: Any = None) -> None:
    """One option's flag (and the switch beside it, where it has one) in ``group``; ``kind``:
    the argument type where the command takes a narrower range than the declaration."""
    flag = option.flag
    common = {"dest": option.name, "default": default, "help": _help(option, default)}
    if flag.const is not None and not flag.optional:
        group.add_argument(flag.name, action="store_const", const=flag.const, **common)
        return
    if flag.optional:
        common["nargs"], common["const"] = "?", flag.const
    if flag.switch is not None:
        both = group.add_mutually_exclusive_group()
        both.add_argument(flag.switch, dest=option.name, action="store_const",
                          const=flag.switch_value, help=flag.switch_help.replace("%", "%%"))
        group = both
    group.add_argument(flag.name, type=kind or _type(flag.type), choices=flag.choices,
                       metavar=flag.metavar, **common)


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str],
              defaults: Mapping[str, Any] | None = None,
              types: Mapping[str, Callable[[str], Any]] | None = None) -> None:
    """Add the flags of the options ``names`` to ``parser``: basic options among the
    command's own arguments, the others in a titled group per option group.

    Args:
        parser: the subcommand's parser.
        names: option names, each declared with a flag.
        defaults: a command's own defaults where they differ from the declaration's.
        types: a command's own argument types where it takes a narrower range.
    """
    titled: dict[str, argparse._ArgumentGroup] = {}
    for name in names:
        option = BY_NAME[name]
        if option.flag is None:
            raise ValueError(f"the option {name} has no command-line flag")
        default = (defaults or {}).get(name, _flag_default(option))
        kind = (types or {}).get(name)
        if option.group == "basic":
            _add(parser, option, default, kind)
            continue
        if option.group not in titled:
            titled[option.group] = parser.add_argument_group(
                option.group, GROUPS[option.group])
        _add(titled[option.group], option, default, kind)


def _flag_default(option: Option) -> Any:
    return option.flag.default if option.flag.default is not None else option.default


def chosen(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The values of the options ``names`` as the command line set them, by option name.

    Args:
        args: the parsed command line.
        names: the option names whose flags the command added.
    """
    return {name: getattr(args, name) for name in names}
