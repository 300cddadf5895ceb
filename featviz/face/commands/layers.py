"""``featviz layers``: list every addressable layer of a model with its output shape, then
the aliases its spec defines."""

from __future__ import annotations

import argparse

from .common import Loader, add_model_args, add_size_arg


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz layers`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    ls = subparsers.add_parser("layers", help="list every addressable layer with its output "
                                              "shape")
    add_model_args(ls)
    add_size_arg(ls, "input size for the shapes")
    ls.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Print the layer table and the aliases; the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name.
    """
    from ...core.hooks import layer_aliases
    from ...models import layer_table

    model = load(args)
    rows = layer_table(model, args.size)
    width = max(len(name) for name, _, _ in rows)
    kind_w = max(len(kind) for _, kind, _ in rows)
    print(f"{'layer'.ljust(width)}  {'module'.ljust(kind_w)}  output (C x H x W)")
    for name, kind, shape in rows:
        print(f"{name.ljust(width)}  {kind.ljust(kind_w)}  {shape}")
    aliases = layer_aliases(model)
    if aliases:
        print("\naliases: " + ", ".join(f"{a} -> {p}" for a, p in aliases.items()))
    return 0
