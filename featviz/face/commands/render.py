"""``featviz render``: optimize images for objective strings, in batches, and write one image
or a contact sheet with a folder of the images.

The render options among its flags come from their declarations
(:mod:`featviz.core.render.options`, through :mod:`featviz.face.options`); the flags written
here are the command's own: the objectives, the parameterization, the files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from ...core import param
from ...core.files import safe_name
from ...core.model_info import image_channels, input_size
from ...errors import FeatvizError
from .. import arguments as types
from ..options import add_flags, chosen
from . import common

#: the render options ``featviz render`` takes as flags (:mod:`featviz.core.render.options`);
#: ``batch`` is ``--batch-size``, how many of the objectives render together
OPTIONS = ("steps", "size", "batch", "seed", "lr", "pace", "transforms", "lr_schedule", "ema",
           "adam_floor", "stop_at", "rail_guard", "views", "polish", "amp", "memory_format",
           "compile", "thresholds", "progress")
#: what the command itself does with: the images' size and seeds, the batches' length
_OWN = ("size", "batch", "seed")


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featviz render`` and its flags.

    Args:
        subparsers: the subcommands of the ``featviz`` parser.
    """
    from ...core.objectives import GRAMMAR

    r = subparsers.add_parser("render", help="optimize images for an objective",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=GRAMMAR)
    common.add_model_args(r)
    r.add_argument("--objective", required=True, action="append",
                   help="objective string (repeatable); see below")
    _add_image_args(r)
    r.add_argument("--clipping", type=types.positive_float, metavar="WEIGHT",
                   help="subtract WEIGHT x clipping(0.05) from every objective: keeps colour "
                        "values off 0 and 1, where renders turn flat black, white or pure "
                        "colour (1e4 suits channels of InceptionV1)")
    r.add_argument("--gif", type=types.gif_out,
                   help="also write the snapshots as an animated GIF here")
    r.add_argument("--init", type=types.existing_file,
                   help="start from this image file instead of noise")
    r.add_argument("--out", required=True, type=types.sheet_out,
                   help="image file (.png, .jpg, ...); with several images also a folder of "
                        "the same name without the suffix, holding one PNG per image, and the "
                        "file is a labelled contact sheet")
    add_flags(r, OPTIONS)
    r.set_defaults(run=run)


def _add_image_args(r: argparse.ArgumentParser) -> None:
    """The flags of the parameterization: its kind and what it takes."""
    # default None, read as fourier: so that --pixel can tell a --param given beside it
    r.add_argument("--param", choices=param.KINDS,
                   help="parameterization (default: fourier): fourier or pixel images, maco "
                        "(fixed natural spectrum, phase optimized), laplacian (pyramid), cppn "
                        "(a coordinate network)")
    r.add_argument("--pixel", action="store_true", help="the old spelling of --param pixel")
    r.add_argument("--no-decorrelate", action="store_true", help="plain RGB parameters")
    r.add_argument("--alpha", action="store_true",
                   help="with --param fourier or pixel: an RGBA image blended over random "
                        "backgrounds (writes RGBA PNGs)")
    r.add_argument("--spectrum", help="with --param maco: a spectrum file (.pt/.npy) or a "
                                      "folder of photos to measure it from (default: a power "
                                      "law fitted on photos)")


def run(args: argparse.Namespace, load: common.Loader) -> int:
    """Render every objective string of ``--objective`` and write the result; the exit
    status: 0, or 130 when a Ctrl-C stopped it (what was made is written first).

    Args:
        args: the parsed command line.
        load: what loads the model the flags name (after every check that needs none).
    """
    kind = _param_kind(args)
    specs = _render_specs(args)
    model = load(args)
    size = input_size(model, args.size)
    init = common.load_image(args.init, model, size) if args.init else None
    finished, labels, stopped = _render_batches(args, model, kind, specs, size, init)
    return _write_render(args, finished, labels, stopped, many=len(specs) > 1)


def _plain_channel(spec: str) -> tuple[str, int] | None:
    """(LAYER, C) where ``spec`` is one ``channel:LAYER:C`` term of weight 1 (read by the
    objective grammar), else None."""
    from ...core.objectives import terms

    first, *more = terms(spec)
    if more or first.kind != "channel" or first.weight != 1 or not first.args[1].isdigit():
        return None
    return first.args[0], int(first.args[1])


def _batches(specs: list[str], batch_size: int):
    """Group single-image objective strings into batches of at most ``batch_size``: plain
    channels of one layer as one vectorized objective, anything else as a sum of per-image
    objectives."""
    from ...core.objectives import Objective, channel, parse

    for start in range(0, len(specs), batch_size):
        chunk = specs[start:start + batch_size]
        plain = [_plain_channel(s) for s in chunk]
        if len(chunk) > 1 and all(p is not None and p[0] == plain[0][0] for p in plain):
            yield chunk, channel(plain[0][0], [c for _, c in plain])
        elif len(chunk) == 1:
            yield chunk, parse(chunk[0])
        else:
            yield chunk, Objective.sum(parse(s).on(i) for i, s in enumerate(chunk))


def _param_kind(args: argparse.Namespace) -> str:
    """The parameterization ``render``'s flags name: ``--param`` (default fourier), of which
    ``--pixel`` is the old spelling for pixel. A flag that does not fit the kind is an error
    naming both, before the model loads."""
    kind = args.param or ("pixel" if args.pixel else "fourier")
    if args.pixel and kind != "pixel":
        raise FeatvizError(f"--pixel is the old spelling of --param pixel; it cannot go with "
                           f"--param {kind}")
    if args.alpha and kind not in ("fourier", "pixel"):
        raise FeatvizError(f"--alpha goes with --param fourier or pixel, not --param {kind}")
    if args.spectrum is not None and kind != "maco":
        raise FeatvizError(f"--spectrum goes with --param maco, not --param {kind}")
    return kind


def _make_param(args: argparse.Namespace, kind: str, size: int, seeds: list[int], init,
                channels: int = 3):
    """The parameterization ``kind`` of ``channels``-channel images, image ``i`` drawn from
    ``seeds[i]``; colour decorrelation is ImageNet's for RGB unless ``--no-decorrelate``."""
    return param.make(kind, size, len(seeds), decorrelate=False if args.no_decorrelate else None,
                      alpha=args.alpha, spectrum=args.spectrum, init=init, seed=seeds,
                      channels=channels)


def _render_specs(args: argparse.Namespace) -> list[str]:
    """The single-image objective strings ``render`` makes, after checking everything that
    can be checked before the model loads."""
    from ...core.objectives import expand, parse

    specs = [s for spec in args.objective for s in expand(spec)]
    for s in specs:
        parse(s)  # fail on a bad string before the model loads
    if len(specs) > 1 and not Path(args.out).suffix:
        raise FeatvizError(f"--out {args.out} needs a suffix such as .png when rendering "
                           f"{len(specs)} images: the contact sheet goes there, the images "
                           f"into the folder {args.out}/")
    if not Path(args.out).suffix:  # a PNG without .png is a file nothing opens as an image
        raise FeatvizError(f"--out {args.out} needs a suffix such as .png or .jpg that names "
                           f"the image format: write {args.out}.png")
    common.warn_if_no_steps(args.steps)
    return specs


def _render_batches(args: argparse.Namespace, model: nn.Module, kind: str, specs: list[str],
                    size: int, init) -> tuple[list[torch.Tensor], list[str], str | None]:
    """Render ``specs`` batch by batch: the images made, their labels, and None, or where a
    first Ctrl-C stopped (the batch in flight keeps what it made so far). A second Ctrl-C
    raises KeyboardInterrupt at once."""
    from ...core.objectives import clipping
    from ...core.render import render

    many = len(specs) > 1
    finished: list[torch.Tensor] = []
    labels: list[str] = []
    stopped = None
    try:
        for k, (chunk, objective) in enumerate(_batches(specs, args.batch)):
            # image n of the whole list uses seed + n, whatever batch it falls into
            seeds = [args.seed + len(labels) + i for i in range(len(chunk))]
            p = _make_param(args, kind, size, seeds, init, image_channels(model))
            if many:
                print(f"batch {k + 1}: {len(chunk)} image(s): {', '.join(chunk)}", flush=True)
            if args.clipping:
                objective = objective - args.clipping * clipping()
            res = render(model, objective, p, interrupt="return", **_render_options(args))
            if res.interrupted:
                stopped = f"after {res.steps_done} of {args.steps} steps of batch {k + 1}"
            _keep_batch(args, res, chunk, seeds, k, many)
            finished.append(res.shown())
            labels.extend(chunk)
            if stopped:
                break
    except KeyboardInterrupt:
        if stopped:  # the second Ctrl-C
            raise
        stopped = f"after {len(finished)} finished batch(es)"  # a first one between renders
    return finished, labels, stopped


def _render_options(args: argparse.Namespace) -> dict:
    """The options the flags set, as :func:`featviz.render` takes them (the command makes
    the images' parameterization itself, from ``--size`` and ``--seed``)."""
    return {k: v for k, v in chosen(args, OPTIONS).items() if k not in _OWN}


def _keep_batch(args: argparse.Namespace, res, chunk: list[str], seeds: list[int], k: int,
                many: bool) -> None:
    """Write one batch's own files (its images in the folder, its GIF) and report it."""
    if many:
        res.save_each(Path(args.out).with_suffix(""), [safe_name(s) for s in chunk])
    values = ", ".join(f"{v:.3g}" for v in res.values.tolist())
    print(f"  objective {values} after {res.steps_done} steps in {res.seconds:.1f} s "
          f"(seeds {seeds[0]}-{seeds[-1]}){_stop_note(args, res)}", flush=True)
    if args.gif:
        gif = Path(args.gif)
        res.save_gif(gif if not many else gif.with_name(f"{gif.stem}_{k:03d}{gif.suffix}"))


def _stop_note(args: argparse.Namespace, res) -> str:
    """What the held-out checks of --until-converged/--stop-at measured, and why it stopped."""
    if res.held_out is None or not len(res.held_out):
        return ""
    held = ", ".join(f"{v:.3g}" for v in res.held_out[-1].tolist())
    why = ""
    if res.steps_done < args.steps and not res.interrupted:
        why = (", stopped: converged" if args.stop_at == "converged"
               else f", stopped: reached {args.stop_at:g}")
    return f"; held-out objective {held}{why}"


def _write_render(args: argparse.Namespace, finished: list[torch.Tensor], labels: list[str],
                  stopped: str | None, many: bool) -> int:
    """Write the image (or contact sheet) of what was made; the exit status: 0, or 130 when
    a Ctrl-C stopped the render (what was made so far is written first, and said so)."""
    from ...core import images

    out = Path(args.out)
    if not finished:
        print(f"featviz render: interrupted (Ctrl-C) {stopped}, before any image was made; "
              "nothing written", file=sys.stderr)
        return common.INTERRUPTED
    images.save(torch.cat(finished), out, labels if many else None, alpha=args.alpha)
    where = f"{out} (contact sheet) and {out.with_suffix('')}/" if many else str(out)
    print(f"wrote {where}")
    if stopped is None:
        return 0
    print(f"featviz render: interrupted (Ctrl-C) {stopped}: wrote what was made so far to "
          f"{where}", file=sys.stderr)
    return common.INTERRUPTED
