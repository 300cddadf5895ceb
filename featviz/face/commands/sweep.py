"""``featviz sweep``: render every chosen channel of layers into a folder; resumable, and
split over ranks under ``torchrun``.

The render options among its flags come from their declarations, as ``render``'s do
(:mod:`featviz.face.options`), with the same names in Python (:func:`featviz.sweep.sweep`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core import param
from .. import arguments as types
from ..options import add_flags, chosen
from .common import Loader, add_model_args

#: the render options ``featviz sweep`` takes as flags, the same as ``featviz render``'s but
#: the snapshots and the progress bar (a sweep logs each batch)
OPTIONS = ("steps", "size", "batch", "seed", "lr", "pace", "transforms", "lr_schedule", "ema",
           "adam_floor", "stop_at", "rail_guard", "views", "polish", "amp", "memory_format",
           "compile")


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz sweep`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    sw = subparsers.add_parser(
        "sweep", help="render every channel of layers into a folder; resumable, and split "
                      "over ranks under torchrun",
        description="Render channels x layers into --out. Under `torchrun --nproc_per_node N "
                    "-m featviz sweep ...` the jobs are split over the N ranks (gloo on the "
                    "CPU, NCCL on GPUs). Run the same command again to resume: finished "
                    "channels are skipped.")
    add_model_args(sw)
    sw.add_argument("--layers", required=True, type=types.layer_list,
                    help="comma-separated layers; KIND:LAYER renders KIND:LAYER:N for each "
                         "channel N instead (mlp:blocks.8: a transformer block's MLP units)")
    sw.add_argument("--channels", default="all", help="all (default), a range 0-63 or a list 1,5,9")
    sw.add_argument("--param", default="fourier", choices=param.KINDS,
                    help="parameterization of every image (default: fourier)")
    sw.add_argument("--images", help="folder of photos: also keep each channel's top-k patches "
                                     "(with their classes where it holds a labels.tsv)")
    sw.add_argument("--labels", type=types.existing_file,
                    help="labels file (tab-separated: file, class_name/class_index) for --images")
    sw.add_argument("--k", type=types.positive, default=9,
                    help="patches per channel with --images (default: 9)")
    sw.add_argument("--out", required=True, type=types.folder_out,
                    help="sweep folder (created; reused to resume)")
    # a sweep renders at least one step: its images are recorded as finished renders
    add_flags(sw, OPTIONS, types={"steps": types.whole_number(1, types.MAX_STEPS)})
    sw.set_defaults(run=run)


def run(args: argparse.Namespace, load: Loader) -> int:
    """Render this rank's share of the sweep; rank 0 prints the summary. The exit status: 0,
    or 128 + the signal that interrupted this rank.

    Args:
        args: the parsed command line (``args.device`` is set to this rank's device).
        load: what loads the model the flags name (on this rank's device).
    """
    from .. import sweep

    sweep.parse_channel_spec(args.channels)  # a typo fails before the model loads
    weights = args.weights
    if weights and str(weights).lower() not in ("random", "none") and Path(weights).is_file():
        weights = str(Path(weights).resolve())  # the same file from any working directory
    with sweep.distributed(args.device) as (rank, world, device):
        args.device = device
        model = load(args)
        result = sweep.sweep(
            model, args.out, args.layers, args.channels, param=args.param,
            images=args.images, labels=args.labels, k=args.k, rank=rank, world_size=world,
            settings={"model": args.model, "weights": weights, "mean": args.mean,
                      "std": args.std}, **chosen(args, OPTIONS))
        if result.interrupted:  # the other ranks may never reach the meeting point
            return 128 + int(result.signal or 2)
        results = sweep.gather_results(result)
    if rank == 0:
        print(sweep.summary(results, args.out, result.keys), flush=True)
        print(f"browse it: featviz gallery {args.out}", flush=True)
    return 0
