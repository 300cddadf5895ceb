"""``featviz gallery``: write the browsable HTML gallery of a sweep folder."""

from __future__ import annotations

import argparse

from .. import arguments as types
from .common import Loader


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz gallery`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    g = subparsers.add_parser("gallery", help="write a browsable HTML gallery of a sweep folder")
    g.add_argument("folder", help="a folder written by `featviz sweep --out`")
    g.add_argument("--out", type=types.file_out,
                   help="where to write index.html (default: FOLDER/index.html)")
    g.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Write the gallery pages and say where; the exit status, 0.

    Args:
        args: the parsed command line.
        load: the model loader (unused: the gallery needs no model).
    """
    from .. import gallery

    index = gallery.write(args.folder, args.out)
    print(f"wrote {index}")
    return 0
