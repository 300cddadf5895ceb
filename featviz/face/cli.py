"""The ``featviz`` command: the entry point, which registers the subcommands of
:mod:`featviz.face.commands` (one module each) and turns every way a run can end into an exit
status.

Exit statuses (also in the README, "Errors"): 0 done; 2 bad input, one line on stderr that
names the bad value and what would be right; 130 interrupted by Ctrl-C (``render`` writes
what was made first); 1 a bug in featviz: a traceback, and a line asking to report it.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence

import torch

from .. import __version__
from ..errors import FeatvizError
from .commands import (
    accentuate,
    atlas,
    blocks,
    circuit,
    deconv,
    dictionary,
    erf,
    gallery,
    invert,
    layers,
    maps,
    microscope,
    models,
    occlude,
    paths,
    render,
    sweep,
    topk,
)
from .commands.common import INTERRUPTED, Parser
from .commands.common import load_model as _load_model

#: The subcommands, in the order ``featviz --help`` lists them: each module's ``add`` adds its
#: parser, its ``run`` runs it.
COMMANDS = (render, layers, deconv, topk, occlude, invert, erf, maps, blocks, atlas, circuit,
            dictionary, microscope, sweep, paths, accentuate, gallery, models)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``featviz`` command (``featviz --help``): each module of
    :data:`COMMANDS` adds its subcommand, and sets the function that runs it as
    ``args.run``. Every option's value is checked as it is parsed
    (:mod:`featviz.face.arguments`)."""
    parser = Parser(prog="featviz", description="See what the units, channels, layers and "
                    "classes of an image network respond to.",
                    epilog="Exit status: 0 done, 2 bad input (one line says what is wrong), "
                    "130 interrupted (Ctrl-C), 1 a bug in featviz.")
    parser.add_argument("--version", action="version", version=f"featviz {__version__}",
                        help="print featviz's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featviz`` command; returns the exit status: 0 done, 2 bad input
    (one line on stderr names the bad value and what would be right), 130 interrupted by
    Ctrl-C, 1 a bug in featviz (a traceback and a request to report it). Warnings print as
    one line each, ``featviz: warning: ...``.

    Args:
        argv: the arguments after ``featviz`` (default: the process's own).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _tidy_warnings():
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exit_:  # --help, or a mistake the parser has reported
                return exit_.code if isinstance(exit_.code, int) else int(bool(exit_.code))
            return _run(args, argv)
    except KeyboardInterrupt:  # while parsing, or a second Ctrl-C while reporting
        print("featviz: interrupted", file=sys.stderr)
        return INTERRUPTED


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the parsed command; every way it can end becomes an exit status (see
    :func:`main`), with one line on stderr for all but a bug."""
    name = f"featviz {args.command}"
    try:
        # the loader is this module's _load_model as it is now, so that replacing it here
        # (the tests do, to refuse or watch loading) reaches every command
        return args.run(args, _load_model)
    except FeatvizError as err:
        return _fail(name, str(err))
    except BrokenPipeError:  # `featviz layers ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:  # a file the library opened: missing, unreadable, disk full
        where = f"{err.filename}: " if err.filename else ""
        return _fail(name, f"{where}{err.strerror or err}")
    except KeyboardInterrupt:
        print(f"{name}: interrupted (Ctrl-C); nothing more was written", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if _out_of_memory(err):
            return _fail(name, "not enough memory for this run; try a smaller --size or "
                               "--batch-size")
        traceback.print_exc()
        print(f"{name}: this is a bug in featviz, please report it with the command: "
              f"featviz {shlex.join(argv)}", file=sys.stderr)
        return 1


def _fail(name: str, message: str) -> int:
    """Print the one-line message of bad input; its exit status, 2."""
    print(f"{name}: error: {message}", file=sys.stderr)
    return 2


def _out_of_memory(err: Exception) -> bool:
    """Whether ``err`` says the machine ran out of memory: torch's CUDA error, or the CPU
    allocator's RuntimeError, which has no type of its own (hence the message)."""
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


@contextlib.contextmanager
def _tidy_warnings() -> Iterator[None]:
    """Print warnings as one line, ``featviz: warning: ...``, instead of Python's
    ``file:line: Category: ...`` with the source line (what a user of the command does not
    need); the previous way comes back afterwards."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """:func:`warnings.showwarning` for the command: the message alone, on one line."""
    text = " ".join(str(message).split())
    print(f"featviz: warning: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
