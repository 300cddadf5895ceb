"""``featviz topk``: the dataset patches that excite channels most, with their projections,
in the Zeiler & Fergus layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.model_info import input_size
from ...methods.deconv import MODES as PROJECTION_MODES
from .. import arguments as types
from .common import Loader, add_model_args, add_size_arg


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz topk`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    t = subparsers.add_parser("topk", help="top-k dataset patches of channels, with projections")
    add_model_args(t)
    t.add_argument("--images", required=True,
                   help="folder of image files (its labels.tsv, if any, names their classes)")
    t.add_argument("--labels", type=types.existing_file,
                   help="labels file (tab-separated: file, class_name/class_index) for --images")
    t.add_argument("--layer", required=True, help="the layer whose channels are ranked")
    t.add_argument("--channels", required=True, type=types.channel_list,
                   help="channels to rank, e.g. 0-7 or 1,5,9")
    t.add_argument("--k", type=types.positive, default=9,
                   help="patches kept per channel (default: 9)")
    add_size_arg(t)
    t.add_argument("--batch-size", type=types.positive, default=32,
                   help="images per forward pass (default: 32)")
    t.add_argument("--mode", default="deconvnet", choices=PROJECTION_MODES,
                   help="how the patches are projected (default: deconvnet)")
    t.add_argument("--out", required=True, type=types.image_out,
                   help="image file in the Zeiler & Fergus layout")
    t.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Rank the channels' patches, write the figure and print each channel's best three;
    the exit status, 0.

    Args:
        args: the parsed command line.
        load: what loads the model the flags name (after the labels are checked).
    """
    from ...methods import dataset, deconv

    dataset.labelled(args.images, args.labels)  # a bad labels.tsv fails before the model loads
    model = load(args)
    top = deconv.top_k(model, args.images, args.layer, args.channels, args.k,
                       size=input_size(model, args.size), batch_size=args.batch_size,
                       mode=args.mode, labels=args.labels)
    top.save(args.out)
    for c, entries in top.entries.items():
        best = ", ".join(f"{Path(e.source).name}{f' ({e.class_name})' if e.label else ''} "
                         f"{e.value:.2f}" for e in entries[:3])
        print(f"{args.layer}:{c}: {best}{', ...' if len(entries) > 3 else ''}")
    print(f"{top.field_text}; wrote {args.out}")
    return 0
