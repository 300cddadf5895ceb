"""``featviz models``: list the model names ``--model`` accepts."""

from __future__ import annotations

import argparse

from .common import Loader


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz models`` (it has no flags).

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    subparsers.add_parser("models", help="list the model names --model accepts").set_defaults(
        run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Print the model registry: each name ``--model`` accepts with its family, input size,
    weights and what it is; the exit status, 0.

    Args:
        args: the parsed command line.
        load: the model loader (unused: nothing is loaded).
    """
    from ...models import format_catalog

    print(format_catalog())
    return 0
